"""The contract between the sync worker and a vendor adapter.

Adapters take our *intended FHIR resource* and make the vendor hold it: through FHIR where the vendor
accepts FHIR writes, through its proprietary API (athenaOne v1, Veradigm Unity) where it does not. They
never import writeback models: the worker hands them plain dataclasses and records what comes back.

Every call returns the HTTP exchanges it made (secrets removed) so the worker can store them as
WriteAttempt rows, and an outcome class from the one classifier in `adapters.classify`.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    COMMITTED = "committed"  # the target holds it (id and version known where the vendor gives them)
    CONFLICT = "conflict"  # 412 / version conflict / read-compare-write found a newer edit
    RETRYABLE = "retryable"  # 408, 429, 503, other 5xx, connect errors: nothing landed, try later
    AMBIGUOUS = "ambiguous"  # timeout or connection lost after sending: it may have landed
    TERMINAL = "terminal"  # 400/422, 403, 404/405, 401 after one refresh: a person must look


class Guarantee(StrEnum):
    IF_MATCH = "if_match"
    CONDITIONAL_CREATE = "conditional_create"
    READ_COMPARE_WRITE = "read_compare_write"
    LEDGER = "ledger"  # our ledger + check-by-read is the only duplicate protection


@dataclass(frozen=True)
class TargetConfig:
    """What an adapter knows about a tenant (built from the Tenant row by the worker)."""

    slug: str
    vendor: str
    base_url: str
    identifier_system: str
    auth_mode: str = "none"  # none | smart
    client_id: str = ""
    token_url: str = ""
    private_key_ref: str = ""  # path to a PEM file, or "env:VARNAME"
    key_id: str = ""
    scope_style: str = "v2"
    settings: dict[str, Any] = field(default_factory=dict)
    # (resource_type, operation) pairs the tenant has enabled: SMART scopes are computed from these.
    enabled: frozenset[tuple[str, str]] = frozenset()
    # What the tenant's capability registry says about conditional create, per resource type: True when
    # confirmed (discovered conditionalCreate, or set by hand), False when refused; absent = unknown.
    conditional_create: dict[str, bool] = field(default_factory=dict)
    connect_timeout: float = 5.0
    read_timeout: float = 20.0


@dataclass
class HttpExchange:
    """One HTTP request and its answer, as stored on a WriteAttempt (no secrets)."""

    method: str
    url: str
    request_id: str
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body_hash: str = ""
    status: int | None = None
    response_body: str = ""  # truncated; OperationOutcome text kept for the console
    latency_ms: float | None = None
    error: str = ""


@dataclass(frozen=True)
class OutboundRefusal:
    """A request the HTTP layer did not make because its URL lies outside the tenant: not under the
    tenant's FHIR base (origin and base path) or a configured vendor API root. Nothing was sent, so no
    credential left. The domain raises an alert for it (`VendorAdapter.take_refusals`).

    `source`: where the URL came from: `next-link` (a search Bundle's paging link), `redirect` (a 3xx
    answer's Location, never followed) or `request` (a request an adapter built)."""

    source: str
    url: str  # query secrets removed
    reason: str
    method: str = "GET"
    correlation_id: str = ""


@dataclass
class WriteRequest:
    """One ledger write, as the worker asks an adapter to perform it."""

    write_uid: str
    resource_type: str
    operation: str  # create | update | patch | compensate
    resource: dict[str, Any]  # the intended FHIR resource, carrying our identifier
    correlation_id: str
    patient_ref: str = ""
    encounter_ref: str = ""
    target_id: str = ""  # update/patch/compensate: the resource on the target
    base_version: str = ""  # update/patch: sent as If-Match W/"<base_version>"
    context: dict[str, Any] = field(default_factory=dict)  # compensation strategy, 2PC phase, ...


@dataclass
class WriteResult:
    outcome: Outcome
    exchanges: list[HttpExchange] = field(default_factory=list)
    resource_id: str = ""
    version: str = ""
    # What we asked the target to hold, in FHIR form (after vendor translation): read-back compares to it.
    sent: dict[str, Any] | None = None
    # The resource the target's answer says it stored, when the answer names exactly what was written
    # (`adapters.classify.stored_in_answer`); the worker takes it as the read-back only where the
    # adapter declares `answer_is_stored`. `stored_problem`: why a 2xx answer's body was not taken.
    stored: dict[str, Any] | None = None
    stored_problem: str = ""
    message: str = ""  # OperationOutcome / vendor error text, for the console
    retry_after: float | None = None  # seconds, from Retry-After or quota headers
    guarantee: Guarantee = Guarantee.LEDGER
    # On CONFLICT: the target's current resource and version ("theirs").
    current: dict[str, Any] | None = None
    current_version: str = ""


@dataclass
class LookupResult:
    """Check-by-read: is a resource carrying our identifier already on the target?"""

    found: bool | None  # None: could not tell (the read itself failed)
    exchanges: list[HttpExchange] = field(default_factory=list)
    resource_id: str = ""
    version: str = ""
    resource: dict[str, Any] | None = None
    outcome: Outcome | None = None  # set when the read failed
    message: str = ""
    retry_after: float | None = None


@dataclass
class ReadResult:
    resource: dict[str, Any] | None
    exchanges: list[HttpExchange] = field(default_factory=list)
    version: str = ""
    outcome: Outcome | None = None  # set when the read failed
    message: str = ""
    retry_after: float | None = None  # seconds, from Retry-After, when the read failed


@dataclass
class SearchPage:
    """One page of a search (reconciliation sweeps page through the EHR one page at a time)."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    next_url: str = ""  # the next page, already checked to lie under the tenant's FHIR base
    exchanges: list[HttpExchange] = field(default_factory=list)
    outcome: Outcome | None = None  # set when the page could not be read
    message: str = ""


@dataclass
class PlannedRequest:
    """A request the adapter would make, for the console's plan view and dry runs."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    note: str = ""


@dataclass
class ManualInstructions:
    """A correction with no API path: who must do what, in the EHR's own screens."""

    role: str  # clinician | admin | integration_engineer
    title: str
    instructions: str


@dataclass
class CompensationPlan:
    """How to undo a committed write at this vendor: compensating requests, or a person's task.

    A rollback is usually one request (mark entered-in-error, restore the previous value); a clinical
    correction may be two (the corrected entry, and the old one marked entered-in-error or superseded).
    """

    requests: list[WriteRequest] = field(default_factory=list)
    manual: ManualInstructions | None = None
    description: str = ""  # shown in the console before the operator confirms


@dataclass(frozen=True)
class AdapterCapabilities:
    writes: frozenset[tuple[str, str]]  # (resource_type, operation) this vendor path accepts
    # Types written through FHIR, where /metadata discovery applies; the others go through a proprietary API.
    fhir_written_types: frozenset[str]
    conditional_create: bool
    if_match: bool
    patch: bool
    read_back: bool
    search_by_identifier: bool
    # A 200/201 answer to a FHIR write, asked for with `Prefer: return=representation`, holds the stored
    # resource as a read right after would return it. Where declared, a body that names the written
    # resource (type, id, version) is the read-back and no GET is made; elsewhere the worker reads back.
    # Declared only where the vendor is known to answer faithfully (docs/vendors.md).
    answer_is_stored: bool = False
    # Why a (resource_type, operation) is refused, when it is: shown to operators verbatim.
    refusals: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass
class DiscoveredCapability:
    resource_type: str
    operation: str  # create | update | patch | read | search | conditional_create | delete
    allowed: bool
    # What else the statement says about the type (conditionalUpdate, conditionalDelete), as text.
    notes: str = ""


@dataclass(frozen=True)
class WireLoss:
    """A difference between our intended resource and what the vendor stores, known in advance.

    `path` is a glob over flattened paths (`code.coding[1].*`, `identifier[*]*`); `kind` is `dropped`
    (the wire format cannot carry it), `changed` (the vendor stores another value) or `added` (the vendor
    or our translation adds it, e.g. the `[wb:<uid>]` marker in a note)."""

    path: str
    kind: str
    why: str

    def matches(self, path: str, kind: str) -> bool:
        if kind != self.kind:
            return False
        pattern = re.escape(self.path).replace(r"\[\*\]", r"\[\d+\]").replace(r"\*", ".*")
        return re.fullmatch(pattern, path) is not None


@dataclass
class DiscoveryResult:
    ok: bool
    capabilities: list[DiscoveredCapability] = field(default_factory=list)
    software: str = ""
    fhir_version: str = ""
    error: str = ""
    exchanges: list[HttpExchange] = field(default_factory=list)


class VendorAdapter(abc.ABC):
    vendor: str = ""

    def __init__(self, target: TargetConfig) -> None:
        self.target = target

    @classmethod
    @abc.abstractmethod
    def capabilities(cls) -> AdapterCapabilities: ...

    @classmethod
    def wire_losses(cls) -> dict[str, tuple[WireLoss, ...]]:
        """Per resource type, how the stored resource may differ from our intended one (docs/vendors.md).
        Anything else the vendor stores differently is a defect the contract tests catch."""
        return {}

    def refusal(self, resource_type: str, operation: str) -> str | None:
        """The reason this vendor cannot do it, or None when it can."""
        caps = self.capabilities()
        if (resource_type, operation) in caps.writes:
            return None
        return caps.refusals.get(
            (resource_type, operation),
            f"{self.vendor} offers no API to {operation} {resource_type}",
        )

    def preflight(self, req: WriteRequest) -> str | None:
        """Why this vendor would refuse this write for missing context (e.g. Epic vitals without an
        encounter), checked at intake and again before sending; None when nothing is missing."""
        return None

    @abc.abstractmethod
    def plan(self, req: WriteRequest) -> list[PlannedRequest]:
        """The exact requests `write(req)` would make (no network)."""

    @abc.abstractmethod
    def write(self, req: WriteRequest) -> WriteResult: ...

    @abc.abstractmethod
    def find_by_identifier(self, req: WriteRequest) -> LookupResult:
        """Searches the target for a resource carrying our identifier for req.write_uid."""

    @abc.abstractmethod
    def read(self, resource_type: str, resource_id: str, *, correlation_id: str = "") -> ReadResult: ...

    @abc.abstractmethod
    def current_for(self, req: WriteRequest) -> ReadResult:
        """What the EHR holds that this write would change or add to (shadow mode, plan predictions):
        the target resource for updates; for creates, the patient's latest resource of that type and code."""

    @abc.abstractmethod
    def compensation(
        self, req: WriteRequest, *, kind: str, resource_id: str, version: str, data: dict[str, Any] | None
    ) -> CompensationPlan:
        """How to undo (kind=rollback) or correct (kind=correction, with `data`) a committed write.
        `req` is the original write; the plan's request (if any) is performed by the worker later."""

    @abc.abstractmethod
    def discover(self, *, correlation_id: str = "") -> DiscoveryResult:
        """Reads /metadata (CapabilityStatement)."""

    def search_page(
        self, resource_type: str, params: dict[str, str] | None = None, *, url: str = ""
    ) -> SearchPage:
        """One page of a search: the first (`params`) or a next link (`url`). Only adapters whose
        capabilities declare `search_by_identifier` need it (reconciliation sweeps)."""
        return SearchPage(outcome=Outcome.TERMINAL, message=f"{self.vendor} cannot search by identifier")

    def take_refusals(self) -> list[OutboundRefusal]:
        """The requests refused since the last call (URLs outside the tenant), and forgets them. The
        worker and the services call it after each use of the adapter and raise an alert per refusal."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections."""
