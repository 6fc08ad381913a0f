"""Transaction and batch Bundles posted to the FHIR base (FHIR R4 http.html#transaction), generic profile.

Entries are processed in R4's order (DELETE, then POST, then PUT and PATCH, then GET) by the same
interactions the REST API serves, and answered in the request's order with `response.status`, `location`,
`etag` and `lastModified` (and the resource per `Prefer`).

A transaction holds the store's lock from its first entry to its last, so nobody sees it half done, and
any failing entry undoes every write it made: the answer is then that entry's error status with an
OperationOutcome naming the entry. Before any POST or PUT is written, each entry's target is decided
(server ids for creates, the match of a conditional create or update), so references to a `urn:uuid:` /
`urn:oid:` `fullUrl` are replaced by `Type/id` in the other entries' resources (a JSON Patch's values
included). Conditional references (`Patient?identifier=system|value`) are resolved by search after the
deletes and must match exactly one resource (else 412). A reference to a `urn:` that no entry carries is
400, as are two entries changing the same resource.

A batch runs each entry on its own: one failing entry gets its error in its `response` and the others
stand. R4 allows no dependencies between batch entries, so a reference to another entry's `fullUrl` is
that entry's 400 rather than a dangling reference stored.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from .messages import BadRequest, Request, Response, fhir_response
from .outcomes import FhirError, operation_outcome
from .resource_types import R4_RESOURCE_TYPES
from .search import criteria
from .store import NotFound, Resource

if TYPE_CHECKING:
    from .profiles.generic import GenericProfile

KINDS = ("transaction", "batch")
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3}
JSON_PATCH = "application/json-patch+json"
LOCAL_PREFIXES = ("urn:uuid:", "urn:oid:")
FHIR_JSON_TYPE = "application/fhir+json"


@dataclass
class Entry:
    index: int
    method: str
    path: str  # relative to the base, no query: "Patient", "Patient/123", "Patient/123/_history/2"
    query: str
    full_url: str
    resource: Any
    if_match: str = ""
    if_none_exist: str = ""
    patch: list[Any] | None = None  # a PATCH entry's JSON Patch operations
    target: str = ""  # "Type/id" this entry writes or matches, once resolved
    assigned_id: str = ""  # the id a create here stores under (decided before anything is written)

    @property
    def parts(self) -> list[str]:
        return self.path.split("/")

    @property
    def label(self) -> str:
        return f"entry {self.index} ({self.method} {self.path}{'?' + self.query if self.query else ''})"


class EntryFailed(Exception):
    def __init__(self, entry: Entry, error: FhirError) -> None:
        super().__init__(error.message)
        self.entry = entry
        self.error = error


def is_bundle_post(req: Request, base_path: str) -> bool:
    return req.method == "POST" and req.path.rstrip("/") == base_path


def entry_requests(req: Request, fhir_base: str) -> list[Entry]:
    """The well-formed entries of a posted Bundle, for the checks made before it is handled (scopes,
    faults); [] for a body that is no Bundle (the handler answers it)."""
    try:
        body = req.json()
    except BadRequest:
        return []
    raw = body.get("entry") if isinstance(body, dict) else None
    entries = []
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            entries.append(parse_entry(index, item, fhir_base))
        except FhirError:
            continue
    return entries


def parse_entry(index: int, raw: Any, fhir_base: str) -> Entry:
    def bad(message: str) -> FhirError:
        return FhirError(400, message, issue="structure", expression=[f"Bundle.entry[{index}]"])

    if not isinstance(raw, dict):
        raise bad("an entry must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise bad("the entry needs a request (method and url)")
    method, url = request.get("method"), request.get("url")
    if method not in ORDER:
        raise bad(f"request.method must be GET, POST, PUT, PATCH or DELETE, not {method!r}")
    if not isinstance(url, str) or not url.strip():
        raise bad("the entry needs a request.url")
    split = urlsplit(url.strip())
    path = split.path
    if split.scheme:
        absolute = f"{split.scheme}://{split.netloc}{split.path}"
        if absolute != fhir_base and not absolute.startswith(fhir_base + "/"):
            raise bad(f"request.url {url!r} is not on this server")
        path = absolute[len(fhir_base) :]
    path = unquote(path).strip("/")
    if not path:
        raise bad("request.url names no resource type")
    resource = raw.get("resource")
    if method in ("POST", "PUT", "PATCH") and not isinstance(resource, dict):
        raise bad(f"a {method} entry needs a resource")
    strings = {name: raw.get(name, "") for name in ("fullUrl",)} | {
        name: request.get(name, "") for name in ("ifMatch", "ifNoneExist")
    }
    for name, value in strings.items():
        if not isinstance(value, str):
            raise bad(f"{name} must be a string")
    return Entry(
        index=index,
        method=method,
        path=path,
        query=split.query,
        full_url=strings["fullUrl"],
        resource=resource,
        if_match=strings["ifMatch"],
        if_none_exist=strings["ifNoneExist"],
        patch=_patch_operations(index, resource) if method == "PATCH" else None,
    )


def process_bundle(profile: GenericProfile, req: Request, body: Any, prefer: str) -> Response:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError(400, "POST to the base takes a Bundle (transaction or batch)", issue="structure")
    kind = body.get("type")
    if kind not in KINDS:
        raise FhirError(
            400,
            f"a Bundle posted to the base must be a transaction or a batch, not {kind!r}",
            issue="invalid",
            expression=["Bundle.type"],
        )
    raw = body.get("entry", [])
    if not isinstance(raw, list):
        raise FhirError(400, "Bundle.entry must be a list", issue="structure", expression=["Bundle.entry"])
    run = Run(profile, prefer)
    if kind == "transaction":
        answers = run.transaction(
            [parse_entry(i, item, profile.fhir_base) for i, item in enumerate(raw)], req
        )
    else:
        answers = run.batch(raw, req)
    return fhir_response(200, {"resourceType": "Bundle", "type": f"{kind}-response", "entry": answers})


class Run:
    """One Bundle's processing."""

    def __init__(self, profile: GenericProfile, prefer: str) -> None:
        self.profile = profile
        self.store = profile.store
        self.prefer = prefer

    # -- the two kinds -----------------------------------------------------------------------------
    def transaction(self, entries: list[Entry], req: Request) -> list[dict[str, Any]]:
        self._stale_first(entries, req)
        answers: dict[int, dict[str, Any]] = {}
        try:
            with self.store.atomic():
                for entry in self._ordered(entries, 0):
                    answers[entry.index] = self._guarded(entry, self._resolve_and_run)
                for entry in entries:
                    if entry.method != "DELETE":
                        self._guarded(entry, self._resolve)
                self._check_overlaps(entries)
                local = {e.full_url: e.target for e in entries if e.target and self._is_local(e.full_url)}
                for entry in entries:
                    self._guarded(
                        entry, lambda e: self._rewrite(e, lambda ref: self._in_transaction(ref, local))
                    )
                for rank in (1, 2, 3):
                    for entry in self._ordered(entries, rank):
                        answers[entry.index] = self._guarded(entry, self._run)
        except EntryFailed as failed:
            raise self._failure(failed)
        return [answers[e.index] for e in entries]

    def batch(self, raw: list[Any], req: Request) -> list[dict[str, Any]]:
        answers: dict[int, dict[str, Any]] = {}
        entries = []
        for index, item in enumerate(raw):
            try:
                entries.append(parse_entry(index, item, self.profile.fhir_base))
            except FhirError as err:
                answers[index] = self._error_answer(err)
        self._stale_first(entries, req)
        others = {e.full_url for e in entries if self._is_local(e.full_url)}
        for rank in (0, 1, 2, 3):
            for entry in self._ordered(entries, rank):
                try:
                    self._guarded(entry, lambda e: self._rewrite(e, lambda ref: self._in_batch(ref, others)))
                    answers[entry.index] = self._guarded(entry, self._run)
                except EntryFailed as failed:
                    answers[entry.index] = self._error_answer(failed.error)
        return [answers[i] for i in range(len(raw))]

    # -- steps -------------------------------------------------------------------------------------
    @staticmethod
    def _ordered(entries: list[Entry], rank: int) -> list[Entry]:
        return [e for e in entries if ORDER[e.method] == rank]

    @staticmethod
    def _is_local(full_url: str) -> bool:
        return full_url.startswith(LOCAL_PREFIXES)

    @staticmethod
    def _guarded(entry: Entry, step: Callable[[Entry], Any]) -> Any:
        try:
            return step(entry)
        except FhirError as err:
            raise EntryFailed(entry, err)
        except BadRequest as exc:
            raise EntryFailed(entry, FhirError(400, str(exc), issue="structure"))

    def _stale_first(self, entries: list[Entry], req: Request) -> None:
        """The stale_version fault on a Bundle: a concurrent edit lands on the first If-Match entry's
        resource just before the Bundle is processed (and stands even if a transaction then fails)."""
        if not req.stale_version:
            return
        entry = next((e for e in entries if e.if_match and e.method != "GET"), None)
        if entry is None:
            return
        with contextlib.suppress(FhirError, NotFound):
            if len(entry.parts) == 2:
                target: Resource | None = {"id": entry.parts[1]}
            else:
                target = self._match(entry.parts[0], entry.query, "the stale_version fault")
            if target is not None:
                self.store.modify(entry.parts[0], target["id"], lambda current: current)

    def _resolve_and_run(self, entry: Entry) -> dict[str, Any]:
        self._resolve(entry)
        return self._run(entry)

    def _resolve(self, entry: Entry) -> None:
        """Decides the resource a write lands on (`target`) and the id of a create, as the interaction
        will (the store's lock is held from here to the write)."""
        resource_type, instance = entry.parts[0], len(entry.parts) == 2
        if resource_type not in R4_RESOURCE_TYPES or entry.method == "GET" or len(entry.parts) > 2:
            return  # the interaction itself answers these
        if instance:
            entry.target = f"{resource_type}/{entry.parts[1]}"
            return
        if entry.method == "POST":
            found = self._match(resource_type, entry.if_none_exist, "If-None-Exist", issue="duplicate")
        elif entry.method in ("PUT", "DELETE"):
            what = "conditional update" if entry.method == "PUT" else "conditional delete"
            found = self._match(resource_type, entry.query, what)
        else:
            return
        if found is not None:
            entry.target = f"{resource_type}/{found['id']}"
        elif entry.method != "DELETE":
            body_id = entry.resource.get("id") if entry.method == "PUT" else None
            entry.assigned_id = (
                body_id if isinstance(body_id, str) and body_id else self.store.new_id(resource_type)
            )
            entry.target = f"{resource_type}/{entry.assigned_id}"

    def _match(self, resource_type: str, query: str, what: str, **issue: str) -> Resource | None:
        """The one resource conditional criteria match (none without criteria); several is 412."""
        query = query.strip().lstrip("?")
        if not query and what == "If-None-Exist":
            return None
        where = criteria(parse_qs(query, keep_blank_values=True), what)
        return self.profile.only_match(resource_type, where, what, **issue)

    @staticmethod
    def _check_overlaps(entries: list[Entry]) -> None:
        seen: dict[str, Entry] = {}
        full_urls: dict[str, Entry] = {}
        for entry in entries:
            if entry.full_url in full_urls:
                first = full_urls[entry.full_url]
                raise EntryFailed(
                    entry, FhirError(400, f"fullUrl {entry.full_url} is also {first.label}", issue="invalid")
                )
            if entry.full_url:
                full_urls[entry.full_url] = entry
            writes = entry.method in ("DELETE", "PUT", "PATCH") or (
                entry.method == "POST" and entry.assigned_id
            )
            if not writes or not entry.target:
                continue
            if entry.target in seen:
                message = f"{seen[entry.target].label} and {entry.label} both change {entry.target}"
                raise EntryFailed(entry, FhirError(400, message, issue="invalid"))
            seen[entry.target] = entry

    def _in_transaction(self, reference: str, local: dict[str, str]) -> str:
        if reference in local:
            return local[reference]
        if self._is_local(reference):
            raise FhirError(400, f"reference {reference} names no entry of this transaction", issue="invalid")
        return self._conditional_reference(reference)

    def _in_batch(self, reference: str, others: set[str]) -> str:
        if reference in others:
            raise FhirError(
                400,
                f"reference {reference} names another entry: batch entries must not depend on each other "
                "(send a transaction)",
                issue="invalid",
            )
        return self._conditional_reference(reference)

    def _conditional_reference(self, reference: str) -> str:
        resource_type, mark, query = reference.partition("?")
        if not mark or resource_type not in R4_RESOURCE_TYPES:
            return reference
        found = self._match(resource_type, query, f"conditional reference {reference}")
        if found is None:
            raise FhirError(412, f"conditional reference {reference} matches no resource", issue="not-found")
        return f"{resource_type}/{found['id']}"

    def _rewrite(self, entry: Entry, resolve: Callable[[str], str]) -> None:
        """Replaces the references of the entry's resource (or JSON Patch values) that `resolve` maps."""
        if entry.method in ("POST", "PUT"):
            entry.resource = _rewritten(entry.resource, resolve)
        elif entry.patch is not None:
            for op in entry.patch:
                if isinstance(op, dict) and "value" in op:
                    value = op["value"]
                    if str(op.get("path", "")).endswith("/reference") and isinstance(value, str):
                        op["value"] = resolve(value)
                    else:
                        op["value"] = _rewritten(value, resolve)

    def _run(self, entry: Entry) -> dict[str, Any]:
        content_type, body = FHIR_JSON_TYPE, b""
        if entry.method in ("POST", "PUT"):
            body = json.dumps(entry.resource).encode()
        elif entry.patch is not None:
            content_type, body = JSON_PATCH, json.dumps(entry.patch).encode()
        headers = {"content-type": content_type, "prefer": "return=representation"}
        if entry.if_match:
            headers["if-match"] = entry.if_match
        if entry.if_none_exist:
            headers["if-none-exist"] = entry.if_none_exist
        path = f"{self.profile.fhir_base_path}/{entry.path}"
        sub = Request(
            method=entry.method,
            path=path,
            target=f"{path}?{entry.query}" if entry.query else path,
            query=parse_qs(entry.query, keep_blank_values=True),
            headers=headers,
            body=body,
            assigned_id=entry.assigned_id,
        )
        return self._answer(entry, self.profile.route(sub))

    # -- answers -----------------------------------------------------------------------------------
    def _answer(self, entry: Entry, response: Response) -> dict[str, Any]:
        body = json.loads(response.body) if response.body else None
        outcome: dict[str, Any] = {"status": f"{response.status} {HTTPStatus(response.status).phrase}"}
        location = response.headers.get("Location", "")
        if location:
            outcome["location"] = location.removeprefix(self.profile.fhir_base + "/")
        if response.headers.get("ETag"):
            outcome["etag"] = response.headers["ETag"]
        answer: dict[str, Any] = {}
        if isinstance(body, dict) and body.get("resourceType"):
            if body.get("id") and body["resourceType"] != "Bundle":
                answer["fullUrl"] = f"{self.profile.fhir_base}/{body['resourceType']}/{body['id']}"
            if body.get("meta", {}).get("lastUpdated"):
                outcome["lastModified"] = body["meta"]["lastUpdated"]
            if entry.method == "GET" or self.prefer in ("", "representation"):
                answer["resource"] = body
            elif self.prefer == "OperationOutcome":
                message = f"{entry.method} {body['resourceType']}/{body.get('id', '')}: {outcome['status']}"
                outcome["outcome"] = operation_outcome(message, issue="informational", severity="information")
        return answer | {"response": outcome}

    @staticmethod
    def _error_answer(err: FhirError) -> dict[str, Any]:
        outcome = operation_outcome(err.message, issue=err.issue, expression=err.expression)
        return {"response": {"status": f"{err.status} {HTTPStatus(err.status).phrase}", "outcome": outcome}}

    @staticmethod
    def _failure(failed: EntryFailed) -> FhirError:
        err, entry = failed.error, failed.entry
        prefix = f"Bundle.entry[{entry.index}]"
        expression = [e if e.startswith("Bundle") else f"{prefix}.resource.{e}" for e in err.expression]
        return FhirError(
            err.status,
            f"transaction failed at {entry.label}: {err.message}; nothing was stored",
            issue=err.issue,
            expression=expression or [prefix],
        )


def _rewritten(value: Any, resolve: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {
            key: resolve(item) if key == "reference" and isinstance(item, str) else _rewritten(item, resolve)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewritten(item, resolve) for item in value]
    return value


def _patch_operations(index: int, resource: dict[str, Any]) -> list[Any]:
    """The JSON Patch a PATCH entry carries: R4 puts it in a Binary (base64 `data`)."""
    where = [f"Bundle.entry[{index}].resource"]
    if resource.get("resourceType") != "Binary" or resource.get("contentType") != JSON_PATCH:
        raise FhirError(
            400,
            f"a PATCH entry takes a Binary with contentType {JSON_PATCH} (FHIRPath Patch is not supported)",
            issue="not-supported",
            expression=where,
        )
    try:
        operations = json.loads(base64.b64decode(str(resource.get("data", "")), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise FhirError(
            400, f"the Binary's data is not a base64 JSON Patch: {exc}", issue="structure", expression=where
        )
    if not isinstance(operations, list):
        raise FhirError(422, "a JSON Patch document is an array of operations", issue="processing")
    return operations
