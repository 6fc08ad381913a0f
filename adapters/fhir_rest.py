"""What every adapter shares over FHIR REST: the client and its auth, reads, searches, check-by-read,
shadow-mode lookups, discovery, and the rule that no exception ever leaves an adapter call.

Epic and the generic adapter write through FHIR; athena and Veradigm write through their proprietary
APIs but read through FHIR, so all four build on `FhirRestAdapter`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from adapters import auth
from adapters.base import (
    DiscoveryResult,
    Guarantee,
    LookupResult,
    OutboundRefusal,
    Outcome,
    PlannedRequest,
    ReadResult,
    SearchPage,
    TargetConfig,
    VendorAdapter,
    WriteRequest,
    WriteResult,
)
from adapters.capability_statement import NotACapabilityStatement, parse_capability_statement
from adapters.classify import Classification, Dialect, classify, resource_version, stored_in_answer
from adapters.fhir_changes import applied, change_set
from adapters.http import FhirClient, HttpReply, RequestSpec, Searchset
from adapters.identifiers import carries_identifier, identifier_token, stamp_identifier
from adapters.validation import structure_problem

logger = logging.getLogger(__name__)


# The element holding the code that says what a resource is, per type (for "the patient's latest
# resource of that type and code", and for matching candidates in a search).
CODE_ELEMENT = {
    "Observation": "code",
    "Condition": "code",
    "AllergyIntolerance": "code",
    "MedicationStatement": "medicationCodeableConcept",
    "DocumentReference": "type",
}
# Search parameter names for that code, where servers commonly support one.
CODE_SEARCH_PARAM = {
    "Observation": "code",
    "Condition": "code",
    "AllergyIntolerance": "code",
    "MedicationStatement": "code",
}
# The element that says when a resource happened, per type (newest first for shadow mode).
WHEN_ELEMENTS = (
    "effectiveDateTime",
    "recordedDate",
    "onsetDateTime",
    "authored",
    "date",
    "dateAsserted",
    "issued",
)


# --- request context ----------------------------------------------------------------------------------


def reference_id(reference: str) -> str:
    """'Patient/123', 'https://host/fhir/Patient/123' or '123' -> '123'."""
    return (reference or "").rstrip("/").rsplit("/", 1)[-1]


def _ref_of(resource: dict[str, Any], *paths: str) -> str:
    for path in paths:
        value: Any = resource
        for step in path.split("."):
            value = value.get(step) if isinstance(value, dict) else None
            if isinstance(value, list):
                value = value[0] if value else None
        if isinstance(value, dict) and value.get("reference"):
            return reference_id(value["reference"])
    return ""


def patient_id(req: WriteRequest) -> str:
    return reference_id(req.patient_ref) or _ref_of(req.resource or {}, "subject", "patient", "for")


def encounter_id(req: WriteRequest) -> str:
    return reference_id(req.encounter_ref) or _ref_of(req.resource or {}, "encounter", "context.encounter")


def api_root(target: TargetConfig) -> str:
    """Where a vendor's proprietary API lives: `settings["api_root"]`, else the origin of the FHIR base."""
    configured = str(target.settings.get("api_root") or "").rstrip("/")
    if configured:
        return configured
    parts = urlsplit(target.base_url)
    return f"{parts.scheme}://{parts.netloc}"


def first_coding(resource: dict[str, Any] | None, element: str | None = None) -> dict[str, Any]:
    if not isinstance(resource, dict):
        return {}
    element = element or CODE_ELEMENT.get(resource.get("resourceType", ""), "code")
    concept = resource.get(element)
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    codings = (concept or {}).get("coding") or [] if isinstance(concept, dict) else []
    return next((c for c in codings if isinstance(c, dict) and c.get("code")), {})


def code_display(resource: dict[str, Any] | None) -> str:
    coding = first_coding(resource)
    element = CODE_ELEMENT.get((resource or {}).get("resourceType", ""), "code")
    concept = (resource or {}).get(element) or {}
    text = concept.get("text") if isinstance(concept, dict) else ""
    return str(coding.get("display") or text or coding.get("code") or "")


def code_token(resource: dict[str, Any] | None) -> str:
    coding = first_coding(resource)
    if not coding:
        return ""
    return f"{coding.get('system', '')}|{coding['code']}"


def when(resource: dict[str, Any]) -> str:
    for name in WHEN_ELEMENTS:
        if resource.get(name):
            return str(resource[name])
    period = resource.get("effectivePeriod") or {}
    if period.get("start"):
        return str(period["start"])
    return str((resource.get("meta") or {}).get("lastUpdated") or "")


def _instant(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def same_instant(a: str, b: str) -> bool:
    """Two FHIR dateTimes naming the same moment, whatever their offsets."""
    if not a or not b:
        return False
    pa, pb = _instant(a), _instant(b)
    if pa is not None and pb is not None:
        return pa == pb
    return a == b


def latest(resources: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    def key(res: dict[str, Any]) -> tuple[int, float, str]:
        moment = _instant(when(res))
        return (1, moment.timestamp(), "") if moment else (0, 0.0, when(res))

    ordered = sorted(resources, key=key)
    return ordered[-1] if ordered else None


# --- the "never raises" rule -------------------------------------------------------------------------


def adapter_call[R](method: Callable[..., R]) -> Callable[..., R]:
    """Wraps a public adapter method: collects every HTTP exchange made during the call into the result,
    and turns any exception into a classified failure. An exception after a non-GET request left is
    ambiguous (the write may have landed); before that, terminal."""

    @functools.wraps(method)
    def wrapper(self: FhirRestAdapter, *args: Any, **kwargs: Any) -> R:
        outer = self._depth == 0
        if outer:
            self._journal_mark = len(self._journal)
            self._unsafe_mark = self._unsafe_sent()
        self._depth += 1
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:
            logger.exception("%s.%s failed", type(self).__name__, method.__name__)
            sent = self._unsafe_sent() > self._unsafe_mark
            result = _failure_result(method.__name__, exc, sent=sent)
        finally:
            self._depth -= 1
        if outer:
            result.exchanges = self._journal[self._journal_mark :]  # type: ignore[attr-defined]
            del self._journal[:]
        return result

    return wrapper


def _failure_result(name: str, exc: Exception, *, sent: bool) -> Any:
    message = f"adapter error: {type(exc).__name__}: {exc}"
    if name in ("write",):
        outcome = Outcome.AMBIGUOUS if sent else Outcome.TERMINAL
        if sent:
            message += " (after a request was sent: check by read before sending again)"
        return WriteResult(outcome=outcome, message=message)
    if name == "find_by_identifier":
        return LookupResult(found=None, outcome=Outcome.TERMINAL, message=message)
    if name == "discover":
        return DiscoveryResult(ok=False, error=message)
    if name == "search_page":
        return SearchPage(outcome=Outcome.TERMINAL, message=message)
    return ReadResult(resource=None, outcome=Outcome.TERMINAL, message=message)


# --- the adapter base --------------------------------------------------------------------------------


class FhirRestAdapter(VendorAdapter):
    """A vendor adapter that reads (and possibly writes) through FHIR R4 REST."""

    def __init__(self, target: TargetConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(target)
        self._transport = transport
        self._client: FhirClient | None = None
        self._journal: list = []
        self._refusals: list[OutboundRefusal] = []
        self._journal_mark = 0
        self._unsafe_mark = 0
        self._depth = 0

    # -- the client ------------------------------------------------------------------------------------

    @property
    def client(self) -> FhirClient:
        if self._client is None:
            token_source = None
            if self.target.auth_mode == "smart":
                scope = " ".join(
                    s
                    for s in (
                        auth.scopes_for(self.scope_needs(), self.target.scope_style),
                        *self.extra_scopes(),
                    )
                    if s
                )
                token_source = auth.SmartBackendAuth.for_target(self.target, scope)
            self._client = FhirClient(
                self.target.base_url,
                connect_timeout=self.target.connect_timeout,
                read_timeout=self.target.read_timeout,
                auth=token_source,
                transport=self._transport,
                api_roots=self.api_roots(),
            )
            self._client.journal = self._journal
            self._client.refusals = self._refusals
        return self._client

    def api_roots(self) -> tuple[str, ...]:
        """Configured roots of the vendor's proprietary API, where requests may go besides the FHIR base."""
        return ()

    def take_refusals(self) -> list[OutboundRefusal]:
        taken = list(self._refusals)
        del self._refusals[:]
        return taken

    def _unsafe_sent(self) -> int:
        return self._client.unsafe_sent if self._client is not None else 0

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def scope_needs(self) -> set[tuple[str, str]]:
        """(type, access) pairs for the SMART token; see `adapters.auth.access_needs`."""
        caps = self.capabilities()
        return auth.access_needs(
            self.target.enabled, fhir_types=caps.fhir_written_types, read_back=caps.read_back
        )

    def preflight(self, req: WriteRequest) -> str | None:
        """Refused by the vendor's capabilities, malformed, or missing what the vendor requires: the
        reason, checked at intake and again before sending; None when the write can go."""
        if req.operation != "compensate":
            refusal = self.refusal(req.resource_type, req.operation)
            if refusal:
                return refusal
        return self.payload_problem(req) or self.vendor_preflight(req)

    def vendor_preflight(self, req: WriteRequest) -> str | None:
        """What this vendor needs that the write lacks (encounter context, settings, ...)."""
        return None

    def payload_problem(self, req: WriteRequest) -> str | None:
        """Malformed data in a ledger write (not in the compensations we build ourselves)."""
        if req.operation == "compensate":
            return None
        return structure_problem(req.resource)

    def extra_scopes(self) -> list[str]:
        """Vendor scopes beyond FHIR's (athena's v1 API)."""
        return []

    # -- results ---------------------------------------------------------------------------------------

    def write_result(
        self,
        cls: Classification,
        *,
        sent: dict[str, Any] | None,
        guarantee: Guarantee = Guarantee.LEDGER,
        answer: HttpReply | None = None,
    ) -> WriteResult:
        """`answer`: the reply to a FHIR write of `sent`; its body becomes `stored` only when it names
        the written resource (`stored_in_answer`)."""
        stored, problem = None, ""
        if cls.committed and answer is not None and sent:
            stored, problem = stored_in_answer(answer, str(sent.get("resourceType") or ""))
        return WriteResult(
            outcome=cls.outcome,
            resource_id=cls.resource_id,
            version=cls.version,
            sent=sent,
            stored=stored,
            stored_problem=problem,
            message=cls.message,
            retry_after=cls.retry_after,
            guarantee=guarantee,
        )

    def create_spec(self, req: WriteRequest, resource: dict[str, Any], *, conditional: bool) -> RequestSpec:
        """POST of `resource` stamped with our identifier (and `If-None-Exist` on it when `conditional`)."""
        system = self.target.identifier_system
        stamped = stamp_identifier(resource, system, req.write_uid)
        stamped.pop("id", None)
        condition = f"identifier={identifier_token(system, req.write_uid)}" if conditional else None
        return self.client.create_spec(stamped, if_none_exist=condition)

    def conditional_create_support(self, resource_type: str) -> bool | None:
        """The tenant's registry on conditional create for this type: True confirmed, False refused,
        None unknown. A vendor that has none is False whatever the registry says."""
        if not self.capabilities().conditional_create:
            return False
        return self.target.conditional_create.get(resource_type)

    def fhir_create(self, req: WriteRequest, resource: dict[str, Any], *, conditional: bool) -> WriteResult:
        """POSTs `resource`; with `conditional`, also `If-None-Exist`, which only counts as a guarantee
        (and makes a 5xx safe to resend) when the tenant confirmed conditional create for the type."""
        spec = self.create_spec(req, resource, conditional=conditional)
        trusted = conditional and self.conditional_create_support(req.resource_type) is True
        reply = self.client.send(spec, correlation_id=req.correlation_id)
        cls = classify(reply, conditional_trusted=trusted)
        if conditional and cls.outcome is Outcome.CONFLICT:
            # A 412 on a conditional create means several resources already carry our identifier.
            cls = Classification(
                Outcome.TERMINAL, f"several resources already carry this write's identifier ({cls.message})"
            )
        guarantee = Guarantee.CONDITIONAL_CREATE if trusted else Guarantee.LEDGER
        return self.write_result(cls, sent=spec.json, guarantee=guarantee, answer=reply)

    def planned(self, req: WriteRequest, spec: RequestSpec) -> PlannedRequest:
        return spec.planned(
            correlation_id=req.correlation_id, standard_headers=self.client.standard_headers(spec)
        )

    def with_current(
        self, result: WriteResult, rtype: str, rid: str, correlation_id: str = ""
    ) -> WriteResult:
        """Fills a CONFLICT result with the target's current resource ("theirs")."""
        reply = self.client.read(rtype, rid, correlation_id=correlation_id)
        if reply.ok and reply.resource:
            result.current = reply.resource
            result.current_version = version_of(reply)
        return result

    # -- reads -----------------------------------------------------------------------------------------

    @adapter_call
    def read(self, resource_type: str, resource_id: str, *, correlation_id: str = "") -> ReadResult:
        """The current resource; `resource_id` may also be `<id>/_history/<version>` (a past version).
        `correlation_id`: the write this read serves (read-back, conflict reads), sent as X-Correlation-ID."""
        rid, _, version = resource_id.partition("/_history/")
        if version:
            reply = self.client.vread(resource_type, rid, version.strip("/"), correlation_id=correlation_id)
            return read_result(reply)
        return read_result(self.client.read(resource_type, rid, correlation_id=correlation_id))

    @adapter_call
    def current_for(self, req: WriteRequest) -> ReadResult:
        if req.operation != "create" and req.target_id:
            return read_result(
                self.client.read(req.resource_type, req.target_id, correlation_id=req.correlation_id)
            )
        params = self.patient_search_params(req)
        if params is None:
            return ReadResult(resource=None, message="no patient on the write: nothing to compare with")
        found = self.client.search_all(req.resource_type, params, correlation_id=req.correlation_id)
        failed = _failed(found.replies)
        if failed is not None:
            return ReadResult(resource=None, outcome=failed.outcome, message=failed.message)
        resources = found.resources
        if req.resource_type in CODE_SEARCH_PARAM:
            # Notes and questionnaire answers are typed by the vendor's own codes: the latest one counts.
            resources = [r for r in resources if code_token_matches(r, req.resource)]
        newest = latest(resources)
        return ReadResult(resource=newest, version=resource_version(newest))

    def patient_search_params(self, req: WriteRequest) -> dict[str, str] | None:
        """Search parameters for "this patient's resources of this kind" (narrowed by code where the
        type has a code search parameter); matching is always re-checked on our side."""
        pid = patient_id(req)
        if not pid:
            return None
        params = {"patient": pid}
        token = code_token(req.resource)
        if token and req.resource_type in CODE_SEARCH_PARAM:
            params[CODE_SEARCH_PARAM[req.resource_type]] = token
        return params

    # -- check-by-read ---------------------------------------------------------------------------------

    def lookup_by_identifier_search(self, req: WriteRequest) -> LookupResult:
        """Servers that search by identifier: `?identifier=system|uid`, re-checked on our side."""
        token = identifier_token(self.target.identifier_system, req.write_uid)
        found = self.client.search_all(
            req.resource_type, {"identifier": token}, correlation_id=req.correlation_id
        )
        return self.lookup_from(found, self.identifier_matcher(req))

    def lookup_by_scan(
        self,
        req: WriteRequest,
        matcher: Callable[[dict[str, Any]], bool],
        params: dict[str, str] | None = None,
    ) -> LookupResult:
        """Servers that cannot search by identifier: the patient's resources of that kind, then our
        identifier (or marker) is looked for in each."""
        params = params if params is not None else self.patient_search_params(req)
        if params is None:
            return LookupResult(found=None, outcome=Outcome.TERMINAL, message="no patient to search under")
        found = self.client.search_all(req.resource_type, params, correlation_id=req.correlation_id)
        return self.lookup_from(found, matcher)

    def lookup_applied(self, req: WriteRequest) -> LookupResult:
        """An update leaves no identifier: it landed if the target holds its values."""
        reply = self.client.read(req.resource_type, req.target_id, correlation_id=req.correlation_id)
        cls = classify(reply)
        if not cls.committed or not reply.resource:
            return LookupResult(found=None, outcome=cls.outcome, message=f"could not check: {cls.message}")
        changes = change_set(req)
        found = bool(changes) and applied(reply.resource, changes)
        return LookupResult(
            found=found,
            resource_id=req.target_id,
            version=version_of(reply),
            resource=reply.resource,
            message="" if found else "the target does not hold this write's values",
        )

    def identifier_matcher(self, req: WriteRequest) -> Callable[[dict[str, Any]], bool]:
        system, uid = self.target.identifier_system, req.write_uid
        return lambda res: carries_identifier(res, system, uid)

    @staticmethod
    def lookup_from(found: Searchset, matcher: Callable[[dict[str, Any]], bool]) -> LookupResult:
        matches = [r for r in found.resources if matcher(r)]
        if matches:
            # Several would mean a duplicate already exists; report the first and say so.
            res = matches[0]
            message = f"{len(matches)} resources carry this write's mark" if len(matches) > 1 else ""
            return LookupResult(
                found=True,
                resource_id=str(res.get("id") or ""),
                version=resource_version(res),
                resource=res,
                message=message,
            )
        failed = _failed(found.replies)
        if failed is not None:
            return LookupResult(
                found=None,
                outcome=failed.outcome,
                message=f"could not check: {failed.message}",
                retry_after=failed.retry_after,
            )
        if not found.complete:
            # Not found in the pages read is not "not there": a resend could duplicate it.
            return LookupResult(
                found=None,
                outcome=Outcome.RETRYABLE,
                message=f"could not check: more than {len(found.replies)} pages of results to search",
            )
        return LookupResult(found=False)

    # -- reconciliation --------------------------------------------------------------------------------

    @adapter_call
    def search_page(
        self, resource_type: str, params: dict[str, str] | None = None, *, url: str = ""
    ) -> SearchPage:
        reply, resources, nxt = self.client.search_page(resource_type, params, url=url)
        failed = _failed([reply])
        if failed is not None:
            return SearchPage(outcome=failed.outcome, message=failed.message)
        if not isinstance(reply.body, dict) or reply.body.get("resourceType") != "Bundle":
            return SearchPage(outcome=Outcome.TERMINAL, message="the search answer is not a Bundle")
        return SearchPage(resources=resources, next_url=nxt)

    # -- discovery -------------------------------------------------------------------------------------

    @adapter_call
    def discover(self, *, correlation_id: str = "") -> DiscoveryResult:
        reply = self.client.metadata(correlation_id=correlation_id)
        if not reply.ok:
            return DiscoveryResult(ok=False, error=f"/metadata: {classify(reply).message}")
        try:
            rows, software, version = parse_capability_statement(reply.body)
        except NotACapabilityStatement as exc:
            return DiscoveryResult(ok=False, error=str(exc))
        return DiscoveryResult(ok=True, capabilities=rows, software=software, fhir_version=version)


def version_of(reply: HttpReply) -> str:
    return classify(reply).version or resource_version(reply.resource)


def read_result(reply: HttpReply, dialect: Dialect = Dialect.FHIR) -> ReadResult:
    cls = classify(reply, dialect)
    if cls.committed and reply.resource:
        return ReadResult(resource=reply.resource, version=cls.version or resource_version(reply.resource))
    if cls.committed:
        return ReadResult(resource=None, outcome=Outcome.TERMINAL, message="the answer held no FHIR resource")
    return ReadResult(resource=None, outcome=cls.outcome, message=cls.message, retry_after=cls.retry_after)


def code_token_matches(candidate: dict[str, Any], intended: dict[str, Any] | None) -> bool:
    want = first_coding(intended)
    if not want:
        return True
    element = CODE_ELEMENT.get(candidate.get("resourceType", ""), "code")
    concept = candidate.get(element)
    concepts = concept if isinstance(concept, list) else [concept]
    return any(
        c.get("code") == want.get("code")
        and (not want.get("system") or c.get("system") == want.get("system"))
        for concept in concepts
        if isinstance(concept, dict)
        for c in concept.get("coding") or []
        if isinstance(c, dict)
    )


def _failed(replies: list[HttpReply]) -> Classification | None:
    for reply in replies:
        cls = classify(reply)
        if not cls.committed:
            return cls
    return None
