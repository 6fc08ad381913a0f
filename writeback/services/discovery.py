"""Capability discovery: what a tenant's `/metadata` declares, recorded as `source="discovered"` rows.

Discovered rows sit beside the manual registry and never replace it: a write is allowed only where the
contract, the manual capability and discovery all agree, so discovery can narrow what an engineer
enabled but never widen it. This matters: Veradigm's CapabilityStatement advertises create and update
on a dozen types its FHIR API refuses, and Epic's reflects neither a client's grants nor a site's build.

Conditional update and delete have no operation in our vocabulary: what the statement says about them
(and about conditional create) is kept in the notes of every discovered row of the type.

Discovery failures (no /metadata, an error status, a timeout, something that is not a
CapabilityStatement) are recorded, not raised: an audit entry and `tenant.settings["last_discovery"]`.
Each run has a correlation id, sent with the /metadata request and kept on its audit entry.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from adapters.base import DiscoveredCapability, DiscoveryResult, VendorAdapter
from writeback.models import AuditAction, Capability, ContractRule, Operation, Tenant
from writeback.services import audit
from writeback.services.alerts import outbound_refusals_record
from writeback.services.targets import adapter_for

log = logging.getLogger(__name__)

# What a CapabilityStatement can say about an operation we know (delete and compensate are not ours).
DISCOVERABLE = ("create", "conditional_create", "update", "patch", "read", "search")


@dataclass
class DiscoveryReport:
    tenant: str
    ok: bool
    error: str = ""
    software: str = ""
    fhir_version: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.ok:
            return f"discovery failed for {self.tenant}: {self.error}"
        c = self.counts
        return (
            f"{self.tenant}: {self.software or 'unnamed server'} (FHIR {self.fhir_version or '?'}): "
            f"{c.get('allowed', 0)} operations declared, {c.get('refused', 0)} not declared, on "
            f"{c.get('types', 0)} resource types ({c.get('created', 0)} new, {c.get('changed', 0)} changed)"
        )


def capabilities_discover(
    *, tenant: Tenant, actor: Any = None, adapter: VendorAdapter | None = None
) -> DiscoveryReport:
    """Reads the tenant's /metadata and records it. Never raises for a target that fails."""
    own_adapter = adapter is None
    correlation_id = f"discovery-{uuid.uuid4()}"
    try:
        adapter = adapter or adapter_for(tenant)
        result = adapter.discover(correlation_id=correlation_id)
    except Exception as exc:  # an adapter that cannot even be built is a failed discovery, recorded
        log.exception("discovery for %s failed", tenant.slug)
        result = DiscoveryResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if adapter is not None:
            # A redirect of /metadata to another host is not followed: alerted like any refusal.
            outbound_refusals_record(
                tenant, adapter.take_refusals(), actor=actor if actor is not None else "system"
            )
            if own_adapter:
                adapter.close()
    if not result.ok:
        return _record_failure(tenant, actor, result, correlation_id)
    return _record_success(tenant, actor, result, correlation_id)


def _relevant(rows: list[DiscoveredCapability]) -> dict[tuple[str, str], DiscoveredCapability]:
    """The rows for the resource types our contract writes: a type the statement does not mention is
    recorded as declaring nothing (a narrowed server must read as narrowed, not as silence)."""
    types = set(ContractRule.resource_types())
    known = {(r.resource_type, r.operation): r for r in rows if r.resource_type in types}
    operations = [op for op in DISCOVERABLE if op in Operation.values]
    return {
        (rtype, op): known.get((rtype, op), DiscoveredCapability(rtype, op, False))
        for rtype in sorted(types)
        for op in operations
    }


def _record_success(
    tenant: Tenant, actor: Any, result: DiscoveryResult, correlation_id: str
) -> DiscoveryReport:
    rows = _relevant(result.capabilities)
    declared = {r.resource_type for r in result.capabilities}
    user = actor if actor is not None and not isinstance(actor, str) else None
    counts = {"created": 0, "changed": 0, "allowed": 0, "refused": 0, "types": len({t for t, _ in rows})}
    with transaction.atomic():
        existing = {
            (c.resource_type, c.operation): c
            for c in Capability.objects.filter(tenant=tenant, source=Capability.Source.DISCOVERED)
        }
        for key, row in rows.items():
            counts["allowed" if row.allowed else "refused"] += 1
            current = existing.get(key)
            note = (
                f"declared by /metadata ({result.software or 'server'})"
                + (f"; {row.notes}" if row.notes else "")
                if row.resource_type in declared
                else "type not in /metadata"
            )
            if current is not None and current.allowed == row.allowed and current.notes == note:
                continue  # unchanged: no new history row
            Capability.objects.update_or_create(
                tenant=tenant,
                resource_type=row.resource_type,
                operation=row.operation,
                source=Capability.Source.DISCOVERED,
                defaults={"allowed": row.allowed, "set_by": user, "notes": note},
            )
            counts["created" if current is None else "changed"] += 1
        _remember(
            tenant,
            ok=True,
            software=result.software,
            fhir_version=result.fhir_version,
            counts=counts,
        )
        audit.record(
            AuditAction.CAPABILITIES_DISCOVERED,
            actor=actor,
            tenant=tenant.slug,
            object_type="tenant",
            object_id=tenant.slug,
            correlation_id=correlation_id,
            target_ack=True,
            data={"software": result.software, "fhir_version": result.fhir_version, **counts},
        )
    return DiscoveryReport(
        tenant.slug, True, software=result.software, fhir_version=result.fhir_version, counts=counts
    )


def _record_failure(
    tenant: Tenant, actor: Any, result: DiscoveryResult, correlation_id: str
) -> DiscoveryReport:
    error = result.error or "discovery failed"
    with transaction.atomic():
        _remember(tenant, ok=False, error=error)
        audit.record(
            AuditAction.CAPABILITIES_DISCOVERY_FAILED,
            actor=actor,
            tenant=tenant.slug,
            object_type="tenant",
            object_id=tenant.slug,
            correlation_id=correlation_id,
            target_ack=False,
            data={"error": error, "requests": len(result.exchanges)},
        )
    return DiscoveryReport(tenant.slug, False, error=error)


def _remember(tenant: Tenant, *, ok: bool, **details: Any) -> None:
    """`tenant.settings["last_discovery"]`, written under a row lock so other settings are kept."""
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    settings = dict(locked.settings or {})
    settings["last_discovery"] = {"at": timezone.now().isoformat(), "ok": ok, **details}
    locked.settings = settings
    locked.save(update_fields=["settings", "updated_at"])
    tenant.settings = settings
