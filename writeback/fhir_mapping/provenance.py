"""One Provenance per event: who wrote what, on whose behalf, proposed by what.

Planned at intake with each target named by our identifier on it (a valid R4 Reference); the worker
swaps those for versioned references (`Type/id/_history/vid`) once every other write of the event has
settled, just before sending (`writeback.services.provenance`). R4's Provenance has no `identifier`:
its id is ours (the write's uid), so repeating it can never make a second one.
"""

from typing import Any

PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
US_CORE_PARTICIPANT_TYPE = "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
# The business event, as the Provenance's entity: our identifier of it.
EVENT_SYSTEM = "urn:fhir-writeback:event-id"


def _agent(code: str, display: str, who: dict[str, Any], system: str = PARTICIPANT_TYPE) -> dict[str, Any]:
    return {"type": {"coding": [{"system": system, "code": code, "display": display}]}, "who": who}


def provenance(
    *,
    resource_id: str,
    targets: list[dict[str, Any]],
    recorded: str,
    updates: bool,
    author: dict[str, Any],
    transmitter: dict[str, Any],
    event_uid: str,
    software: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`software`: the Device that proposed the event (automation or AI), an agent of its own."""
    activity = ("UPDATE", "revise") if updates else ("CREATE", "create")
    agents = [
        _agent("author", "Author", author),
        # US Core's transmitter: who sent the data to the EHR (the tenant's Organization or our Device).
        _agent("transmitter", "Transmitter", transmitter, US_CORE_PARTICIPANT_TYPE),
    ]
    if software is not None:
        agents.append(_agent("assembler", "Assembler", software))
    return {
        "resourceType": "Provenance",
        "id": resource_id,
        "target": targets,
        "recorded": recorded,
        "activity": {"coding": [{"system": DATA_OPERATION, "code": activity[0], "display": activity[1]}]},
        "agent": agents,
        "entity": [{"role": "source", "what": {"identifier": {"system": EVENT_SYSTEM, "value": event_uid}}}],
    }
