"""Per-write audit exports for auditors: everything the ledger knows about one write, as JSON, or as a
FHIR R4 Bundle of AuditEvent (one per audit entry) and Provenance (one per write that reached the chart)
resources, validated with fhir.resources before it leaves. Exports are audited: they disclose PHI.
"""

import base64
import json
import uuid
from datetime import UTC
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q
from django.utils import timezone

from adapters.identifiers import our_identifier
from writeback.errors import DomainError
from writeback.models import AuditAction, AuditEntry, Write
from writeback.services import audit
from writeback.services.permissions import require

FORMATS = ("json", "fhir")
ACTION_SYSTEM = "urn:fhir-writeback:audit-action"
USER_SYSTEM = "urn:fhir-writeback:actor"
EVENT_SYSTEM = "urn:fhir-writeback:business-event"
_NAMESPACE = uuid.UUID("0f4a6f1e-8c53-4f0e-9b0e-6a7d4c1b2e90")


def write_export(*, write: Write, user: Any, fmt: str, request_id: str = "", channel: str = "api") -> dict:
    require(
        user,
        "view_audit",
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        request_id=request_id,
        channel=channel,
    )
    if fmt not in FORMATS:
        raise DomainError(400, "invalid-value", "format must be json or fhir", "format")
    entries = _entries(write)
    body = export_json(write, entries) if fmt == "json" else export_fhir_bundle(write, entries)
    audit.record(
        AuditAction.AUDIT_EXPORTED,
        actor=user,
        tenant=write.tenant.slug,
        object_type="write",
        object_id=str(write.uid),
        write_uid=str(write.uid),
        correlation_id=write.correlation_id,
        request_id=request_id,
        data={"format": fmt, "entries": len(entries)},
    )
    return body


def _entries(write: Write) -> list[AuditEntry]:
    """The write's own entries, and those of the event that made it (intake, duplicates)."""
    return list(
        AuditEntry.objects.filter(
            Q(write_uid=str(write.uid)) | Q(event_uid=str(write.event.uid), write_uid="")
        ).order_by("seq")
    )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def export_json(write: Write, entries: list[AuditEntry]) -> dict:
    event = write.event
    attempts = list(write.attempts_log.order_by("number", "id"))
    return _plain(
        {
            "exported_at": timezone.now(),
            "write": {
                "id": write.uid,
                "tenant": write.tenant.slug,
                "resource_type": write.resource_type,
                "operation": write.operation,
                "state": write.state,
                "state_changed_at": write.state_changed_at,
                "risk": write.risk,
                "approval_required": write.approval_required,
                "payload": write.payload,
                "payload_hash": write.payload_hash,
                "base_version": write.base_version,
                "target_resource_id": write.target_resource_id,
                "target_version": write.target_version,
                "guarantee": write.guarantee,
                "attempts": write.attempts,
                "last_error": write.last_error,
                "patient_ref": write.patient_ref,
                "correlation_id": write.correlation_id,
                "readback_diff": write.readback_diff,
                "divergence": write.divergence,
                "preview": write.preview,
                "supersedes": write.supersedes.uid if write.supersedes_id else None,
                "compensates": write.compensates.uid if write.compensates_id else None,
                "replay_of": write.replay_of.uid if write.replay_of_id else None,
                "created_at": write.created_at,
            },
            "event": {
                "id": event.uid,
                "type": event.type,
                "kind": event.kind,
                "idempotency_key": event.idempotency_key,
                "source_system": event.source_system,
                "source_message_id": event.source_message_id,
                "content_hash": event.content_hash,
                "patient_ref": event.patient_ref,
                "patient_identifier": event.patient_identifier,
                "encounter_ref": event.encounter_ref,
                "initiator": event.initiator_name,
                "acting_system": event.acting_system,
                "origin_device": event.origin_device,
                "consent_snapshot": event.consent_snapshot,
                "correlation_id": event.correlation_id,
                "occurred_at": event.occurred_at,
                "received_at": event.received_at,
                "raw_payload": event.raw_payload,
                "canonical_payload": event.canonical_payload,
            },
            "attempts": [
                {
                    "number": a.number,
                    "worker": a.worker_id,
                    "request_id": a.request_id,
                    "correlation_id": a.correlation_id,
                    "method": a.method,
                    "url": a.url,
                    "request_headers": a.request_headers,
                    "request_body_hash": a.request_body_hash,
                    "response_status": a.response_status,
                    "response_body": a.response_body,
                    "latency_ms": a.latency_ms,
                    "outcome": a.outcome,
                    "error": a.error,
                    "started_at": a.started_at,
                }
                for a in attempts
            ],
            "approvals": [
                {
                    "approver": a.approver.get_username(),
                    "decision": a.decision,
                    "rationale": a.rationale,
                    "payload_hash": a.payload_hash,
                    "decided_at": a.decided_at,
                    "expires_at": a.expires_at,
                    "voided_at": a.voided_at,
                    "void_reason": a.void_reason,
                }
                for a in write.approvals.select_related("approver").order_by("decided_at")
            ],
            "conflicts": [
                {
                    "id": c.uid,
                    "base_version": c.base_version,
                    "theirs_version": c.theirs_version,
                    "base": c.base,
                    "ours": c.ours,
                    "theirs": c.theirs,
                    "diff": c.diff,
                    "resolution": c.resolution,
                    "resolved_by": c.resolved_by.get_username() if c.resolved_by_id else None,
                    "resolved_at": c.resolved_at,
                    "resolution_write": c.resolution_write.uid if c.resolution_write_id else None,
                }
                for c in write.conflicts.select_related("resolved_by", "resolution_write")
            ],
            "compensations": [
                {
                    "id": c.uid,
                    "kind": c.kind,
                    "reason": c.reason,
                    "status": c.status,
                    "requested_by": c.requested_by.get_username(),
                    "created_at": c.created_at,
                    "writes": [
                        {"id": w.uid, "resource_type": w.resource_type, "state": w.state}
                        for w in c.writes.all()
                    ],
                    "manual_tasks": [
                        {"id": t.uid, "title": t.title, "status": t.status, "instructions": t.instructions}
                        for t in c.manual_tasks.all()
                    ],
                }
                for c in write.compensations.select_related("requested_by").prefetch_related(
                    "writes", "manual_tasks"
                )
            ],
            "audit_entries": [_entry_json(e) for e in entries],
        }
    )


def _entry_json(e: AuditEntry) -> dict:
    return {
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "tenant": e.tenant,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "event_uid": e.event_uid,
        "write_uid": e.write_uid,
        "correlation_id": e.correlation_id,
        "request_id": e.request_id,
        "target_ack": e.target_ack,
        "data": e.data,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def export_fhir_bundle(write: Write, entries: list[AuditEntry]) -> dict:
    from fhir.resources.R4B.bundle import Bundle

    resources = [_audit_event(write, e) for e in entries]
    resources += [_provenance(w, entries) for w in _chart_writes(write)]
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NAMESPACE, f"export:{write.uid}:{len(entries)}")),
        "type": "collection",
        "timestamp": _instant(timezone.now()),
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }
    # Validation raises on anything that is not valid R4; the dump is what we hand out.
    return json.loads(Bundle.model_validate(bundle).model_dump_json())


def _instant(dt) -> str:
    return dt.astimezone(UTC).isoformat()


def _target_reference(write: Write) -> dict:
    if write.target_resource_id:
        ref = f"{write.resource_type}/{write.target_resource_id}"
        if write.target_version:
            ref += f"/_history/{write.target_version}"
        return {"reference": ref}
    return {
        "type": write.resource_type,
        "identifier": our_identifier(settings.WRITEBACK_IDENTIFIER_SYSTEM, str(write.uid)),
    }


def _action_code(entry: AuditEntry) -> str:
    data = entry.data or {}
    if entry.action == AuditAction.WRITE_TRANSITION and data.get("to") == "committed":
        return "C"
    if entry.action.startswith(("write.rollback", "write.correction", "capability.", "kill_switch.")):
        return "U"
    if entry.action == AuditAction.AUDIT_EXPORTED:
        return "R"
    return "E"


def _outcome(entry: AuditEntry) -> str:
    data = entry.data or {}
    if entry.action == AuditAction.ACCESS_REFUSED or entry.target_ack is False:
        return "4"
    if data.get("to") == "failed_terminal":
        return "8"
    return "0"


def _audit_event(write: Write, e: AuditEntry) -> dict:
    system_actor = e.actor_user_id is None
    details = [
        {"type": "seq", "valueString": str(e.seq)},
        {"type": "hash", "valueString": e.hash},
        {"type": "prev_hash", "valueString": e.prev_hash},
    ]
    for name in ("correlation_id", "request_id", "event_uid", "write_uid"):
        value = getattr(e, name)
        if value:
            details.append({"type": name, "valueString": value})
    details.append(
        {
            "type": "data",
            "valueBase64Binary": base64.b64encode(
                json.dumps(e.data, sort_keys=True, cls=DjangoJSONEncoder).encode()
            ).decode(),
        }
    )
    reason = (e.data or {}).get("reason")
    event = {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid5(_NAMESPACE, f"audit:{e.seq}:{e.hash}")),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": ACTION_SYSTEM, "code": e.action}],
        "action": _action_code(e),
        "recorded": _instant(e.at),
        "outcome": _outcome(e),
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                            "code": "dataprocessor" if system_actor else "humanuser",
                        }
                    ]
                },
                "who": {"identifier": {"system": USER_SYSTEM, "value": e.actor}, "display": e.actor},
                "requestor": not system_actor,
            }
        ],
        "source": {
            "site": e.tenant or "fhir-writeback",
            "observer": {"display": "fhir-writeback"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": [
            {
                "what": _target_reference(write),
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
                "detail": details,
            }
        ],
    }
    if isinstance(reason, str) and reason:
        event["outcomeDesc"] = reason[:1000]
    return event


def _chart_writes(write: Write) -> list[Write]:
    """This write and its compensating writes, where they reached the chart."""
    writes = [write, *write.compensated_by.select_related("event", "tenant")]
    return [
        w for w in writes if w.target_resource_id and w.state in ("committed", "compensated", "superseded")
    ]


def _provenance(write: Write, entries: list[AuditEntry]) -> dict:
    committed_at = next(
        (e.at for e in entries if e.write_uid == str(write.uid) and (e.data or {}).get("to") == "committed"),
        write.state_changed_at,
    )
    agents = [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                        "code": "author",
                    }
                ]
            },
            "who": {
                "identifier": {"system": USER_SYSTEM, "value": write.event.initiator_name or "unknown"},
                "display": write.event.initiator_name or write.event.acting_system or "unknown",
            },
        },
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                        "code": "assembler",
                    }
                ]
            },
            "who": {"display": "fhir-writeback"},
        },
    ]
    for approval in write.approvals.filter(decision="approved").select_related("approver"):
        agents.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "verifier",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": USER_SYSTEM, "value": approval.approver.get_username()},
                    "display": approval.approver.get_username(),
                },
            }
        )
    entities = [
        {
            "role": "source",
            "what": {
                "identifier": {"system": EVENT_SYSTEM, "value": str(write.event.uid)},
                "display": f"business event {write.event.type}",
            },
        }
    ]
    if write.compensates_id:
        entities.append(
            {
                "role": "removal" if write.operation == "compensate" else "revision",
                "what": _target_reference(write.compensates),
            }
        )
    return {
        "resourceType": "Provenance",
        "id": str(uuid.uuid5(_NAMESPACE, f"provenance:{write.uid}")),
        "target": [_target_reference(write)],
        "recorded": _instant(committed_at),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE" if write.operation == "create" else "UPDATE",
                }
            ]
        },
        "agent": agents,
        "entity": entities,
    }


def audit_chain_check(*, user: Any, request_id: str = "", channel: str = "api") -> audit.ChainReport:
    """Walks the whole chain (every row) and records the verdict, so the console can show the last
    result without walking it again on every page view."""
    require(user, "view_audit", None, object_type="audit", request_id=request_id, channel=channel)
    report = audit.verify_chain()
    audit.record(
        AuditAction.AUDIT_CHAIN_VERIFIED,
        actor=user,
        object_type="audit",
        request_id=request_id,
        data={
            "ok": report.ok,
            "checked": report.checked,
            "broken_seq": report.broken_seq,
            "reason": report.reason,
            "head": report.last_hash,
            "keys": list(report.keys),
            "legacy": report.legacy,
        },
    )
    return report


def last_chain_check() -> AuditEntry | None:
    return AuditEntry.objects.filter(action=AuditAction.AUDIT_CHAIN_VERIFIED).order_by("-seq").first()
