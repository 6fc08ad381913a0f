"""One Provenance per event, as a ledger write like any other.

Planned at intake after the event's other writes (last position), where the tenant writes Provenance
and its vendor's adapter can. The claim query holds it until every other write of its event has
settled (`writeback.sync.claim`); just before sending, its targets become versioned references to
what the event actually wrote (`provenance_targets`). A repeat cannot make a second one: the adapter
PUTs it under the write's uid.
"""

import uuid
from typing import Any

from django.conf import settings

from writeback.canonical import CanonicalEvent
from writeback.fhir_mapping import PlannedWrite
from writeback.fhir_mapping.common import validation_problem
from writeback.fhir_mapping.provenance import provenance
from writeback.models import BusinessEvent, PractitionerMapping, Risk, Tenant, Write
from writeback.services.authors import organization_author, vendor_writes_provenance
from writeback.states import WriteState

PROVENANCE = "Provenance"


def writes_provenance(tenant: Tenant) -> bool:
    """The tenant asked for it and its vendor path can write it (docs/vendors.md)."""
    return tenant.write_provenance and vendor_writes_provenance(tenant.vendor)


def software_agent(event: CanonicalEvent | BusinessEvent) -> dict[str, Any] | None:
    """The software that proposed a non-human event, as a Device named by its source system."""
    kind = event.source_kind
    if kind == BusinessEvent.SourceKind.HUMAN:
        return None
    system = event.source.system if isinstance(event, CanonicalEvent) and event.source else ""
    system = system or getattr(event, "source_system", "") or "unknown system"
    return {"type": "Device", "display": f"{system} ({kind})"}


def plan_provenance(
    tenant: Tenant,
    event: CanonicalEvent,
    planned: list[PlannedWrite],
    author: dict[str, Any],
    event_uid: uuid.UUID,
) -> list[PlannedWrite]:
    """The event's Provenance write (or nothing where the tenant does not write Provenance). Its
    targets name each planned resource by our identifier until the worker knows their versions."""
    if not planned or not writes_provenance(tenant):
        return []
    system = settings.WRITEBACK_IDENTIFIER_SYSTEM
    targets = [
        {"reference": f"{p.resource_type}/{p.target_id}"}
        if p.target_id
        else {"identifier": {"system": system, "value": str(p.uid)}, "type": p.resource_type}
        for p in planned
    ]
    uid = uuid.uuid4()
    resource = provenance(
        resource_id=str(uid),
        targets=targets,
        recorded=event.occurred_at.isoformat(),
        updates=any(p.operation != "create" for p in planned),
        author=author,
        transmitter=organization_author(tenant),
        event_uid=str(event_uid),
        software=software_agent(event),
    )
    problem = validation_problem(resource)
    if problem:  # pragma: no cover - built from validated parts; a bug here must not queue bad FHIR
        raise ValueError(f"the event's Provenance is not valid FHIR R4: {problem}")
    resource.pop("id")  # the adapter sends it under the write's uid
    return [
        PlannedWrite(
            uid=uid,
            resource_type=PROVENANCE,
            operation="create",
            resource=resource,
            fields=[k for k in resource if k != "resourceType"],
            path="provenance",
            context={"provenance": True},
        )
    ]


def compensation_provenance(
    *, event: BusinessEvent, original: Write, user: Any, position: int
) -> Write | None:
    """The Provenance of a rollback or correction: a Provenance is never erased, so undoing an event's
    resources is attested by a new one naming the compensating versions, its requester and the
    compensation event. None where the tenant does not write Provenance (or nothing is sent). Stored,
    with the compensating writes, by `ledger.ledger_add`."""
    tenant = original.tenant
    if original.resource_type == PROVENANCE or not writes_provenance(tenant):
        return None
    mapping = PractitionerMapping.objects.filter(tenant=tenant, user=user).first()
    author = (
        {"reference": mapping.practitioner_ref, "display": user.get_username()}
        if mapping is not None
        else organization_author(tenant)
    )
    uid = uuid.uuid4()
    resource = provenance(
        resource_id=str(uid),
        targets=[{"reference": f"{original.resource_type}/{original.target_resource_id}"}],
        recorded=event.occurred_at.isoformat(),
        updates=True,
        author=author,
        transmitter=organization_author(tenant),
        event_uid=str(event.uid),
    )
    resource.pop("id")
    return Write(
        uid=uid,
        event=event,
        tenant=tenant,
        position=position,
        resource_type=PROVENANCE,
        operation="create",
        payload=resource,
        risk=Risk.LOW,
        approval_required=False,
        max_attempts=original.max_attempts,
        patient_ref=original.patient_ref,
        stream_key=Write.make_stream_key(tenant.pk, original.patient_ref, PROVENANCE),
        correlation_id=original.correlation_id,
        context={"provenance": True},
    )


def provenance_targets(write: Write) -> list[dict[str, str]]:
    """Versioned references to every resource the write's event committed, in event order."""
    siblings = (
        Write.objects.filter(event_id=write.event_id, state=WriteState.COMMITTED)
        .exclude(resource_type=PROVENANCE)
        .exclude(target_resource_id="")
        .order_by("position", "id")
        .values_list("resource_type", "target_resource_id", "target_version")
    )
    refs = []
    for resource_type, resource_id, version in siblings:
        path = f"{resource_type}/{resource_id}"
        refs.append({"reference": f"{path}/_history/{version}" if version else path})
    return refs
