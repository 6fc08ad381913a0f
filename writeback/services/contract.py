"""May this tenant do this operation on this resource type, with these fields?

The answer is contract (the matrix row) ∩ capability (the vendor's adapter and the tenant's manual
registry) ∩ discovery (what the server's CapabilityStatement declares, where the vendor writes through
FHIR at all). Every "no" carries a rule code and a reason an operator can act on.
"""

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from adapters.registry import adapter_class
from writeback.models import Capability, ContractOverride, ContractRule, Tenant
from writeback.services.policy import apply_override, version_label

# Event field names for FHIR elements, so a refusal points at what the client sent.
_EVENT_FIELD = {"birthDate": "birth_date", "postalCode": "postal_code"}
# Elements a resource must carry to be valid FHIR, which our updates pass along unchanged (not "written").
_CARRIED = {"Task": frozenset({"intent"})}
_NOT_FIELDS = frozenset({"resourceType", "id", "meta"})


def touched_fields(resource_type: str, payload: dict) -> list[str]:
    """The elements a payload sets, as the contract sees them."""
    carried = _CARRIED.get(resource_type, frozenset())
    return [k for k in payload if k not in _NOT_FIELDS and k not in carried]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str = ""
    reason: str = ""
    fields: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


@dataclass
class TenantContract:
    """The contract rows (with the tenant's overrides applied) and the tenant's capability rows, loaded
    once (three queries) per request or cycle."""

    tenant: Tenant
    rules: dict[str, ContractRule] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    manual: dict[tuple[str, str], Capability] = field(default_factory=dict)
    discovered: dict[tuple[str, str], Capability] = field(default_factory=dict)

    @classmethod
    def load(cls, tenant: Tenant) -> "TenantContract":
        overrides = {o.resource_type: o for o in ContractOverride.objects.filter(tenant=tenant)}
        contract = cls(tenant=tenant)
        for rule in ContractRule.objects.all():
            override = overrides.get(rule.resource_type)
            contract.rules[rule.resource_type] = apply_override(rule, override)
            contract.versions[rule.resource_type] = version_label(rule, override)
        for cap in Capability.objects.filter(tenant=tenant):
            target = contract.manual if cap.source == Capability.Source.MANUAL else contract.discovered
            target[(cap.resource_type, cap.operation)] = cap
        return contract

    @classmethod
    def current(cls, tenant: Tenant) -> "TenantContract":
        """The contract as `load` reads it, kept in memory per process under the contract stamp read
        with `tenant` (`tenant.contract_stamp`, see ContractStamp): any change to the contract rows,
        overrides or capabilities changes the stamp, so the next read of the tenant loads it again.
        Without a stamp (a tenant read without it, or no stamp row) it always loads."""
        stamp = getattr(tenant, "contract_stamp", None)
        if stamp is None:
            return cls.load(tenant)
        kept = _KEPT.get(tenant.pk)
        if kept is not None and kept[0] == stamp:
            # The tenant row itself (vendor, slug) is today's, not the one it was loaded with.
            return replace(kept[1], tenant=tenant)
        contract = cls.load(tenant)
        with _kept_lock:
            _KEPT[tenant.pk] = (stamp, contract)
        return contract

    def may_read(self, resource_type: str) -> bool:
        """Reads (read-back after a commit, shadow comparisons) enabled for this tenant and type."""
        cap = self.manual.get((resource_type, "read"))
        return cap is not None and cap.allowed

    def rule_for(self, resource_type: str) -> ContractRule | None:
        rule = self.rules.get(resource_type)
        return rule if rule is not None and rule.enabled else None

    def version_for(self, resource_type: str) -> str:
        """The contract version a write of this type is decided under, recorded on the write."""
        return self.versions.get(resource_type, "")

    def decide(self, resource_type: str, operation: str, fields: Iterable[str] = ()) -> Decision:
        rule = self.rule_for(resource_type)
        if rule is None:
            return Decision(
                False, "operation-not-supported", f"the contract has no enabled row for {resource_type}"
            )
        if operation not in rule.operations:
            return Decision(
                False,
                "operation-not-supported",
                f"the contract allows {', '.join(rule.operations)} on {resource_type}, not {operation}",
            )
        extra = sorted(set(fields) - set(rule.writable_fields))
        if extra:
            names = ", ".join(_EVENT_FIELD.get(f, f) for f in extra)
            return Decision(
                False,
                "field-not-writable",
                f"{names} on {resource_type} belong to the EHR (source of truth); we may write only "
                f"{', '.join(rule.writable_fields)}",
                tuple(extra),
            )
        if operation == "compensate":
            return Decision(True)
        adapter = adapter_class(self.tenant.vendor)
        caps = adapter.capabilities()
        if (resource_type, operation) not in caps.writes:
            reason = caps.refusals.get(
                (resource_type, operation),
                f"{self.tenant.vendor} offers no API to {operation} {resource_type}",
            )
            return Decision(False, "operation-not-supported", reason)
        manual = self.manual.get((resource_type, operation))
        if manual is None:
            return Decision(
                False,
                "capability-not-granted",
                f"{operation} {resource_type} is not enabled for tenant {self.tenant.slug}",
            )
        if not manual.allowed:
            note = f": {manual.notes}" if manual.notes else ""
            return Decision(
                False,
                "operation-not-supported",
                f"{operation} {resource_type} was turned off for tenant {self.tenant.slug}{note}",
            )
        discovered = self.discovered.get((resource_type, operation))
        if resource_type in caps.fhir_written_types and discovered is not None and not discovered.allowed:
            return Decision(
                False,
                "operation-not-supported",
                f"the server's CapabilityStatement does not declare {operation} on {resource_type}",
            )
        return Decision(True)


# Per process: tenant pk -> (the contract stamp, the contract loaded under it). Never changed in place.
_KEPT: dict[int, tuple[int, TenantContract]] = {}
_kept_lock = threading.Lock()


def may_write(tenant: Tenant, resource_type: str, operation: str, fields: Iterable[str] = ()) -> Decision:
    return TenantContract.load(tenant).decide(resource_type, operation, fields)


def event_field_name(fhir_field: str) -> str:
    return _EVENT_FIELD.get(fhir_field, fhir_field)
