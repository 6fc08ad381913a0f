"""FHIR search over the store: the parameters the adapters use, compiled into one predicate.

Supported: `_id`, `identifier`, `patient` / `subject`, `encounter`, `code`, `category`, `status`, with `,`
as OR and repeated parameters as AND; `_count`, `_offset` (paging), `_sort` (`_lastUpdated` /
`-_lastUpdated`). Other parameters are ignored, as lenient FHIR servers do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from .outcomes import FhirError
from .store import Filter, Resource, identifiers_of

DEFAULT_COUNT = 100
MAX_COUNT = 1000
CONTROL_PARAMS = {"_count", "_offset", "_sort"}


@dataclass
class SearchSpec:
    where: Filter
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: str = ""


def reference_id(reference: str) -> str:
    """`Patient/123`, `http://host/fhir/Patient/123` or `123` -> `123`."""
    return reference.rstrip("/").rsplit("/", 1)[-1]


def _tokens(value: str) -> list[tuple[str | None, str]]:
    """`system|code` -> (system, code); `|code` -> ("", code); `code` -> (None, code) (any system)."""
    tokens: list[tuple[str | None, str]] = []
    for part in value.split(","):
        if "|" in part:
            system, _, code = part.partition("|")
            tokens.append((system, code))
        else:
            tokens.append((None, part))
    return tokens


def _token_match(tokens: list[tuple[str | None, str]], codings: list[dict[str, Any]], value_key: str) -> bool:
    for system, code in tokens:
        for coding in codings:
            if system is not None and (coding.get("system") or "") != system:
                continue
            if code == "" or coding.get(value_key) == code:
                return True
    return False


def _codings(concepts: Any) -> list[dict[str, Any]]:
    if isinstance(concepts, dict):
        concepts = [concepts]
    codings: list[dict[str, Any]] = []
    for concept in concepts or []:
        if isinstance(concept, dict):
            codings.extend(c for c in concept.get("coding") or [] if isinstance(c, dict))
        elif isinstance(concept, str):  # AllergyIntolerance.category is a list of codes
            codings.append({"code": concept})
    return codings


def _references(resource: Resource, paths: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for path in paths:
        values: list[Any] = [resource]
        for step in path.split("."):
            values = [v.get(step) for v in values if isinstance(v, dict)]
            values = [x for v in values for x in (v if isinstance(v, list) else [v])]
        found.extend(
            reference_id(v["reference"]) for v in values if isinstance(v, dict) and v.get("reference")
        )
    return found


PATIENT_PATHS = ("subject", "patient", "for")
ENCOUNTER_PATHS = ("encounter", "context.encounter")


def _matcher(name: str, value: str) -> Callable[[Resource], bool] | None:
    if name == "_id":
        ids = set(value.split(","))
        return lambda r: r.get("id") in ids
    if name == "identifier":
        tokens = _tokens(value)
        return lambda r: _token_match(tokens, identifiers_of(r), "value")
    if name in ("patient", "subject"):
        wanted = {reference_id(v) for v in value.split(",")}
        return lambda r: any(ref in wanted for ref in _references(r, PATIENT_PATHS))
    if name == "encounter":
        wanted = {reference_id(v) for v in value.split(",")}
        return lambda r: any(ref in wanted for ref in _references(r, ENCOUNTER_PATHS))
    if name == "code":
        tokens = _tokens(value)
        return lambda r: _token_match(
            tokens, _codings(r.get("code")) + _codings(r.get("medicationCodeableConcept")), "code"
        )
    if name == "category":
        tokens = _tokens(value)
        return lambda r: _token_match(tokens, _codings(r.get("category")), "code")
    if name == "status":
        statuses = set(value.split(","))
        return lambda r: r.get("status") in statuses
    return None


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [""])[0]
    if raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        raise FhirError(400, f"{name} must be an integer, got {raw!r}", issue="value")
    if number < 0:
        raise FhirError(400, f"{name} must not be negative", issue="value")
    return number


def compile_search(query: dict[str, list[str]]) -> SearchSpec:
    matchers: list[Callable[[Resource], bool]] = []
    indexed: frozenset[str] | None = None
    for name, values in query.items():
        base = name.split(":", 1)[0]
        for value in values:
            matcher = _matcher(base, value)
            if matcher is not None:
                matchers.append(matcher)
            if base == "identifier" and indexed is None:
                codes = [code for _, code in _tokens(value)]
                indexed = frozenset(codes) if all(codes) else None
    sort = query.get("_sort", [""])[0]
    if sort not in ("", "_lastUpdated", "-_lastUpdated"):
        raise FhirError(
            400, f"_sort supports _lastUpdated and -_lastUpdated, not {sort!r}", issue="not-supported"
        )
    return SearchSpec(
        where=Filter(lambda r: all(m(r) for m in matchers), indexed),
        count=min(_int_param(query, "_count", DEFAULT_COUNT), MAX_COUNT),
        offset=_int_param(query, "_offset", 0),
        sort=sort,
    )


def criteria(query: dict[str, list[str]], what: str) -> Filter:
    """The Filter for a conditional interaction's criteria (If-None-Exist, conditional update and
    delete, a conditional reference). Stricter than a search, which ignores what it does not know: here
    an unsupported parameter, a modifier or an empty value would silently widen the match (a conditional
    delete of the wrong resource, a create answered with an unrelated one), so each is a 400."""
    if not query:
        raise FhirError(400, f"{what} needs search criteria (e.g. identifier=system|value)", issue="invalid")
    for name, values in query.items():
        if ":" in name or _matcher(name, "x") is None:
            raise FhirError(
                400, f"{what}: {name!r} is not a search parameter this server supports", issue="not-supported"
            )
        if not all(values):
            raise FhirError(400, f"{what}: {name} has an empty value", issue="value")
    return compile_search(query).where


def searchset(
    matches: list[Resource], spec: SearchSpec, *, type_url: str, query: dict[str, list[str]]
) -> dict[str, Any]:
    """A searchset Bundle for one page of `matches`, with self / next links."""
    if spec.sort:
        matches = sorted(matches, key=lambda r: r["meta"]["lastUpdated"], reverse=spec.sort.startswith("-"))
    page = matches[spec.offset : spec.offset + spec.count]
    base_url = type_url.rsplit("/", 1)[0]

    def link(offset: int) -> str:
        params = [(k, v) for k, vs in query.items() if k != "_offset" for v in vs]
        return f"{type_url}?{urlencode([*params, ('_offset', str(offset))])}"

    links = [{"relation": "self", "url": link(spec.offset)}]
    if spec.count and spec.offset + spec.count < len(matches):
        links.append({"relation": "next", "url": link(spec.offset + spec.count)})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page
        ],
    }
