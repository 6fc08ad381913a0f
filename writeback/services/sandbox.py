"""Replay into a test environment: a live tenant's event (or one write of it) re-run against a test tenant
of the same vendor, to see what today's mapping and that tenant's policy make of it.

The copy is a new event of the test tenant with new writes: new ids, so new identifiers at the target;
planned again from the stored event and decided under the test tenant's contract, policy and
capabilities; queued like intake queues them (approval where that tenant's policy asks). Lineage is kept
both ways: the copy's writes name the original event and write (`context.test_replay_of`), and the audit
entry names both. The target must be marked as a test tenant at creation and share the vendor; anything
else (a live tenant, another vendor, the source itself, a tenant the person may not act on) is refused
and audited, with nothing written.
"""

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import AuditAction, BusinessEvent, Tenant, Write
from writeback.services import audit
from writeback.services.contract import TenantContract, touched_fields
from writeback.services.ledger import ledger_add, planned_write
from writeback.services.permissions import refuse, require
from writeback.services.replay import _planned_today
from writeback.states import WriteState


def sandbox_targets(source: Tenant, visible: Any) -> list[Tenant]:
    """The tenants `source`'s writes may be replayed into, among `visible` (a queryset)."""
    return list(visible.filter(is_test=True, vendor=source.vendor).exclude(pk=source.pk).order_by("slug"))


def replay_into_test(
    *,
    event: BusinessEvent,
    target: Tenant,
    user: Any,
    reason: str,
    write: Write | None = None,
    request_id: str = "",
    channel: str = "api",
) -> list[Write]:
    """Copies `event` (or only `write` of it) into the test tenant `target`; returns the new writes."""
    source = event.tenant
    object_id = str(write.uid if write is not None else event.uid)
    for tenant in (source, target):
        require(
            user,
            "replay",
            tenant,
            object_type="write" if write is not None else "event",
            object_id=object_id,
            request_id=request_id,
            channel=channel,
        )
    why = _refusal(source, target)
    if why:
        refuse(
            user,
            "replay",
            why,
            rule="not-a-test-tenant",
            tenant=target,
            object_type="write" if write is not None else "event",
            object_id=object_id,
            request_id=request_id,
            channel=channel,
        )
    reason = (reason or "").strip()
    if not reason:
        raise DomainError(400, "note-required", "say why this is replayed into the test tenant", "reason")
    if "purged_at" in (event.raw_payload or {}):
        raise DomainError(
            409, "payload-purged", "this event's payload was purged (retention): nothing to replay"
        )
    planned = list(enumerate(_planned_today(event)))
    if write is not None:
        planned = [(i, p) for i, p in planned if i == write.position]
    if not planned:
        raise DomainError(409, "nothing-to-replay", "today's mapping writes nothing for this")
    contract = TenantContract.load(target)
    for _, p in planned:
        decision = contract.decide(p.resource_type, p.operation, touched_fields(p.resource_type, p.resource))
        if not decision:
            raise DomainError(422, decision.rule, f"{target.slug}: {decision.reason}")
    originals = {w.position: w for w in event.writes.exclude(state=WriteState.SUPERSEDED)}
    return _store(event, target, planned, contract, originals, user, reason, request_id)


def _refusal(source: Tenant, target: Tenant) -> str:
    if target.pk == source.pk:
        return "a replay into a test environment goes to another tenant"
    if not target.is_test:
        return f"{target.slug} is not a test tenant: replays into a test environment never reach a live one"
    if target.vendor != source.vendor:
        return f"{target.slug} is a {target.vendor} tenant; {source.slug} is {source.vendor}"
    return ""


def _store(event, target, planned, contract, originals, user, reason, request_id) -> list[Write]:
    now = timezone.now()
    lineage = {"event": str(event.uid), "tenant": event.tenant.slug}
    with transaction.atomic():
        copy = BusinessEvent.objects.create(
            tenant=target,
            type=event.type,
            idempotency_key=f"test-replay:{event.uid}:{uuid.uuid4().hex[:12]}",
            source_system=f"test-replay:{event.tenant.slug}",
            content_hash=event.content_hash,
            raw_payload={**event.raw_payload, "tenant": target.slug},
            canonical_payload=event.canonical_payload,
            patient_ref=event.patient_ref,
            patient_identifier=event.patient_identifier,
            encounter_ref=event.encounter_ref,
            encounter_status=event.encounter_status,
            initiator=event.initiator,
            initiator_name=event.initiator_name,
            submitter=user,
            acting_system="test-replay",
            correlation_id=uuid.uuid4().hex,
            occurred_at=event.occurred_at,
        )
        writes = []
        for i, p in planned:
            w = planned_write(p, i, copy, target, contract, now)
            original = originals.get(i)
            w.context = {
                **w.context,
                "test_replay_of": {**lineage, "write": str(original.uid) if original else ""},
            }
            writes.append(w)
        drafts: list[audit.AuditDraft] = [
            audit.draft(
                AuditAction.TEST_REPLAY_CREATED,
                actor=user,
                tenant=target.slug,
                object_type="event",
                object_id=str(copy.uid),
                event_uid=str(copy.uid),
                correlation_id=copy.correlation_id,
                request_id=request_id,
                data={
                    "from_tenant": event.tenant.slug,
                    "from_event": str(event.uid),
                    "writes": [str(w.uid) for w in writes],
                    "from_writes": [w.context["test_replay_of"]["write"] for w in writes],
                    "reason": reason,
                },
            )
        ]
        ledger_add(
            writes,
            event=copy,
            actor=user,
            reason=f"replayed from {event.tenant.slug} into test tenant {target.slug}",
            drafts=drafts,
            request_id=request_id,
        )
        audit.record_many(drafts)
    return writes
