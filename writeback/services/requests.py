"""From a ledger row to what an adapter is asked to do."""

import copy

from adapters.base import WriteRequest
from writeback.models import Write

# What a worker learnt while sending one write; a new write standing in for it must learn it afresh.
_PER_SEND = ("pre_image", "prepared_version", "previous_status")


def fresh_context(context: dict) -> dict:
    return {k: v for k, v in (context or {}).items() if k not in _PER_SEND}


def identity_uid(write: Write) -> str:
    """The identifier value our resource carries: the write's own id, or for replays and resolutions
    the id of the write they stand in for, so check-by-read finds an earlier landing."""
    return str(write.context.get("identity") or write.uid)


def build_request(write: Write) -> WriteRequest:
    resource = copy.deepcopy(write.payload)
    context = dict(write.context or {})
    operation = context.get("wire_operation") or write.operation
    amends = context.get("amends_write_uid")
    if write.resource_type == "DocumentReference" and amends:
        original = Write.objects.filter(uid=amends).only("target_resource_id").first()
        if original is not None and original.target_resource_id:
            # The amended note replaces the earlier one: point at it by id now that we know it.
            for relation in resource.get("relatesTo", []):
                if relation.get("code") == "replaces":
                    relation["target"] = {"reference": f"DocumentReference/{original.target_resource_id}"}
    if write.resource_type == "Provenance" and context.get("provenance"):
        from writeback.services.provenance import provenance_targets

        # What the event's writes made, at the versions the EHR gave them: known only now.
        resource["target"] = provenance_targets(write)
    if write.compensates_id:
        original = write.compensates
        context.setdefault("original_write_uid", str(original.uid))
        context.setdefault("original_resource", original.payload)
    return WriteRequest(
        write_uid=identity_uid(write),
        resource_type=write.resource_type,
        operation=operation,
        resource=resource,
        correlation_id=write.correlation_id,
        patient_ref=write.patient_ref,
        encounter_ref=write.event.encounter_ref,
        target_id=write.target_resource_id or context.get("target_id", ""),
        base_version=write.base_version,
        context=context,
    )
