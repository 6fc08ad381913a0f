"""Event intake: canonicalize, validate, dedupe, check consent and contract, then store the event and
its writes in one transaction (or, for a dry run, say what would happen and store nothing).

Order of the checks, and the answer each gives:
  envelope (400) -> tenant and token scope (422 unknown-tenant / 403) -> idempotency (200 duplicate /
  409) -> domain and workflow rules (422) -> consent #1 (403, fail closed) -> mapping and contract (422)
  -> store (201).
"""

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from adapters.base import WriteRequest
from adapters.registry import adapter_class
from writeback import logcontext, metrics
from writeback.canonical import CanonicalEvent, canonicalize
from writeback.errors import DomainError
from writeback.fhir_mapping import PlannedWrite, plan_writes
from writeback.intake_reads import initiator_for_event, tenant_for_event
from writeback.models import (
    ApiToken,
    AuditAction,
    BusinessEvent,
    PatientIdentity,
    Tenant,
    Write,
)
from writeback.services import audit
from writeback.services.access import forget_access, prime_access
from writeback.services.authors import author_for
from writeback.services.consents import consent_check
from writeback.services.contract import TenantContract, event_field_name
from writeback.services.ledger import ledger_add, planned_write
from writeback.services.permissions import (
    allowed,
    forget_model_perms,
    has_role_for,
    is_client_app,
    prime_actor,
    prime_model_perm,
    record_event_refusal,
    refuse,
    require,
)
from writeback.services.provenance import plan_provenance
from writeback.services.tokens import tenant_access_from_row
from writeback.states import WriteState
from writeback.validation.outcome import Issue, ValidationFailed, error
from writeback.validation.rules import check_domain


@dataclass
class IntakeRequest:
    body: Any
    user: Any
    token: ApiToken | None = None
    header_idempotency_key: str | None = None
    dry_run: bool = False
    request_id: str = ""
    correlation_id: str = ""


@dataclass
class IntakeResult:
    status: int
    body: dict[str, Any]
    event: BusinessEvent | None = None
    writes: list[Write] = field(default_factory=list)


def content_hash(tenant_slug: str, event: CanonicalEvent) -> str:
    material = {"tenant": tenant_slug, **event.hash_material()}
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def event_ingest(req: IntakeRequest) -> IntakeResult:
    """Takes one event in. A reused key and a contract refusal are audited (`event.refused`) whoever
    calls; a dry run stores nothing, its refusals included."""
    try:
        result = _ingest(req)
    except (DomainError, ValidationFailed) as exc:
        if not req.dry_run:
            body = req.body if isinstance(req.body, dict) else {}
            record_event_refusal(
                exc,
                user=req.user,
                body=req.body,
                idempotency_key=str(req.header_idempotency_key or body.get("idempotency_key") or ""),
                request_id=req.request_id,
                correlation_id=req.correlation_id,
            )
        raise
    finally:
        _forget(req.user)
    if not req.dry_run and result.event is not None:
        metrics.event_received(result.event.tenant.slug, result.event.type, duplicate=result.status == 200)
    return result


def _forget(user) -> None:
    """What this event read of its submitter (tenant grant, model permission) is for this event only."""
    forget_access(user)
    forget_model_perms(user)


def _ingest(req: IntakeRequest) -> IntakeResult:
    body = req.body
    _require_submitter(req)
    key = _idempotency_key(body, req.header_idempotency_key)
    result = canonicalize(body, now=timezone.now())
    if result.status == 400:
        raise ValidationFailed([i for i in result.issues if i.is_error] or result.issues, status=400)
    tenant = _tenant_for(str(body.get("tenant")), req, key, result.event)
    if result.event is None:
        # The data could not be read at all; a reused key is then certainly other content.
        if tenant.known_event:
            raise DomainError(
                409,
                "idempotency-key-reused",
                f"idempotency key {key!r} was already used for different content",
                "idempotency_key",
            )
        raise ValidationFailed(result.issues, status=422)
    event = result.event
    logcontext.bind(tenant=tenant.slug, event_type=event.type)
    initiator, practitioner_ref = _initiator(event, req, tenant)
    chash = content_hash(tenant.slug, event)

    # The tenant's row said whether the key or the source message is known already (usually not).
    duplicate = _find_duplicate(tenant, key, event, chash) if tenant.known_event else None
    if duplicate is not None:
        return _duplicate_answer(duplicate, req)

    issues: list[Issue] = list(result.issues)
    if result.status < 400:
        issues += check_domain(event, now=timezone.now())
        if tenant.identity_clash:
            issues += _identity_issues(tenant, event)
    errors = [i for i in issues if i.is_error]
    if errors:
        raise ValidationFailed(issues, status=422)

    author = author_for(tenant, initiator, practitioner_ref)
    contract = TenantContract.current(tenant)
    amends_uid = _resolve_amends(tenant, event)
    planned, mapping_issues = plan_writes(
        event,
        identifier_system=settings.WRITEBACK_IDENTIFIER_SYSTEM,
        amends_write_uid=amends_uid,
        author=author,
    )
    issues += mapping_issues
    if any(i.is_error for i in mapping_issues):
        raise ValidationFailed(issues, status=422)
    event_uid = uuid.uuid4()
    attestation = plan_provenance(tenant, event, planned, author, event_uid)

    consent = consent_check(
        tenant=tenant, patient_ref=event.patient.id, writes=[(p.resource_type, p.operation) for p in planned]
    )
    if not consent.ok:
        refuse(
            req.user,
            "submit_event",
            consent.reason,
            rule=consent.rule,
            tenant=tenant,
            object_type="patient",
            object_id=event.patient.id,
            request_id=req.request_id,
        )

    # The Provenance is checked against the contract like any write; consent covered the chart writes.
    planned += attestation
    decisions = _contract_issues(tenant, contract, planned, event)
    if decisions:
        raise ValidationFailed(issues + decisions, status=422)

    if req.dry_run:
        return _dry_run_answer(tenant, event, planned, contract, issues, chash, key)

    try:
        stored, writes = _store(
            tenant,
            event,
            planned,
            contract,
            req,
            key,
            chash,
            initiator,
            consent,
            amends_uid,
            author,
            event_uid,
        )
    except IntegrityError:
        # Another request stored the same key (or source message) first: answer as its duplicate.
        duplicate = _find_duplicate(tenant, key, event, chash)
        if duplicate is None:
            raise
        return _duplicate_answer(duplicate, req)
    return IntakeResult(201, _event_body(stored, writes, duplicate=False, issues=issues), stored, writes)


def _require_submitter(req: IntakeRequest) -> None:
    """Only clinicians and client apps submit events (an auditor's or an admin's token is refused before
    the body is read). The tenant named in the body only labels the refusal's audit entry."""
    if has_role_for(req.user, "submit_event") and req.user.is_active:
        return
    slug = req.body.get("tenant") if isinstance(req.body, dict) else None
    tenant = Tenant.objects.filter(slug=slug).first() if isinstance(slug, str) else None
    require(req.user, "submit_event", tenant, object_type="event", request_id=req.request_id)


def _idempotency_key(body: Any, header: str | None) -> str:
    in_body = body.get("idempotency_key") if isinstance(body, dict) else None
    if header and in_body and header != in_body:
        raise DomainError(
            400,
            "idempotency-key-mismatch",
            "the Idempotency-Key header and the body's idempotency_key differ",
            "idempotency_key",
        )
    key = header or in_body
    if not key or not isinstance(key, str) or len(key) > 200:
        raise DomainError(
            400,
            "missing-field",
            "an idempotency key (Idempotency-Key header or idempotency_key, up to 200 characters) "
            "is required",
            "idempotency_key",
        )
    return key


def _tenant_for(slug: str, req: IntakeRequest, key: str, event: CanonicalEvent | None) -> Tenant:
    """The tenant, read in one query with all this event needs to know of it: whether the token and its
    user may act on it, whether the key or source message is known, whether the patient's identifier
    clashes with the chart's, the submitter's Practitioner there, and the contract stamp (so the
    contract in memory is used only while unchanged: `TenantContract.current`)."""
    user = req.user
    tenant = tenant_for_event(slug, user=user, token=req.token, key=key, event=event)
    if tenant is None:
        raise ValidationFailed([error("unknown-tenant", "tenant", f"no tenant {slug!r}", code="not-found")])
    prime_model_perm(user, "submit_on_behalf", tenant.on_behalf)
    if not tenant_access_from_row(req.token, user, tenant):
        refuse(
            req.user,
            "submit_event",
            f"this token may not act on tenant {slug}",
            rule="tenant-forbidden",
            tenant=tenant,
            object_type="tenant",
            object_id=slug,
            request_id=req.request_id,
        )
    return tenant


def _dedupe_match(key: str, event: CanonicalEvent | None) -> Q:
    """The stored events this one would repeat: same idempotency key, or same source message."""
    match = Q(idempotency_key=key)
    message_id = event.source.message_id if event is not None and event.source else None
    if message_id:
        match |= Q(source_system=event.source.system or "", source_message_id=message_id)
    return match


def _initiator(event: CanonicalEvent, req: IntakeRequest, tenant: Tenant) -> tuple[Any, str | None]:
    """The person the event names as its initiator, the submitter when it names nobody (or itself), and
    their Practitioner at the tenant (None without a mapping).

    Only a client app's service account holding the "submit on behalf" permission may name someone
    else, and only an active user of the same tenant who may submit events: a person's token or session
    never submits in someone else's name."""
    name = event.initiator.user if event.initiator else None
    if not name or name == req.user.get_username():
        return req.user, tenant.submitter_practitioner
    if not has_role_for(req.user, "submit_on_behalf"):
        _refuse_initiator(
            req,
            tenant,
            name,
            f"{req.user.get_username()} may not submit in the name of {name!r}: only a client app "
            "holding the 'submit on behalf' permission names another initiator",
        )
    # One query: the person, their roles, their grant of this tenant and their Practitioner there.
    user = initiator_for_event(name, tenant)
    if user is not None:
        prime_actor(user, user)
        prime_access(user, tenant, user.granted)
    if user is None or not allowed(user, "submit_event", tenant) or is_client_app(user):
        _refuse_initiator(
            req, tenant, name, f"initiator {name!r} is not a person who may submit events at {tenant.slug}"
        )
    return user, user.practitioner_ref


def _refuse_initiator(req: IntakeRequest, tenant: Tenant, name: str, message: str) -> None:
    refuse(
        req.user,
        "submit_event",
        message,
        rule="initiator-forbidden",
        tenant=tenant,
        object_type="user",
        object_id=name,
        request_id=req.request_id,
    )


def _find_duplicate(tenant: Tenant, key: str, event: CanonicalEvent, chash: str) -> BusinessEvent | None:
    """The stored event this one repeats, or None. Raises 409 when a key or a source message id is
    reused for other content. One query for both keys (the usual answer is: neither is known)."""
    message_id = event.source.message_id if event.source else None
    found = list(BusinessEvent.objects.filter(_dedupe_match(key, event), tenant=tenant)[:2])
    by_key = next((e for e in found if e.idempotency_key == key), None)
    existing = by_key or (found[0] if found else None)
    if existing is None:
        return None
    if existing.content_hash != chash:
        if by_key is not None:
            raise DomainError(
                409,
                "idempotency-key-reused",
                f"idempotency key {key!r} was already used for different content (event {existing.uid})",
                "idempotency_key",
            )
        raise DomainError(
            409,
            "source-message-reused",
            f"source message {message_id!r} was already received with other content (event {existing.uid})",
            "source.message_id",
        )
    return existing


def _duplicate_answer(existing: BusinessEvent, req: IntakeRequest) -> IntakeResult:
    writes = list(existing.writes.order_by("position", "id"))
    if not req.dry_run:
        audit.record(
            AuditAction.EVENT_DUPLICATE_SUPPRESSED,
            actor=req.user,
            tenant=existing.tenant.slug,
            object_type="event",
            object_id=str(existing.uid),
            event_uid=str(existing.uid),
            correlation_id=req.correlation_id,
            request_id=req.request_id,
            data={"original_correlation_id": existing.correlation_id},
        )
    return IntakeResult(200, _event_body(existing, writes, duplicate=True, issues=[]), existing, writes)


def _identity_issues(tenant: Tenant, event: CanonicalEvent) -> list[Issue]:
    ident = event.patient.identifier
    if ident is None:
        return []
    # One query: the chart identity of this patient id, and whoever holds this identifier.
    known = list(
        PatientIdentity.objects.filter(tenant=tenant)
        .filter(
            Q(patient_ref=event.patient.id) | Q(identifier_system=ident.system, identifier_value=ident.value)
        )
        .values_list("patient_ref", "identifier_system", "identifier_value")[:2]
    )
    for patient_ref, system, value in known:
        if patient_ref == event.patient.id and (system, value) != (ident.system, ident.value):
            return [
                error(
                    "patient-identity-mismatch",
                    "patient.identifier",
                    f"patient {event.patient.id} is charted at {tenant.slug} with another identifier "
                    f"({system}|{value})",
                    code="business-rule",
                )
            ]
        if patient_ref != event.patient.id:
            return [
                error(
                    "patient-identity-mismatch",
                    "patient.identifier",
                    f"identifier {ident.system}|{ident.value} belongs to patient {patient_ref} at "
                    f"{tenant.slug}, not {event.patient.id}",
                    code="business-rule",
                )
            ]
    return []


def _resolve_amends(tenant: Tenant, event: CanonicalEvent) -> str | None:
    amends = getattr(event.data, "amends", None)
    if not amends:
        return None
    lookup = BusinessEvent.objects.filter(tenant=tenant, type="note.signed", patient_ref=event.patient.id)
    try:
        original = lookup.filter(uid=uuid.UUID(str(amends))).first()
    except ValueError:
        original = None
    original = original or lookup.filter(idempotency_key=str(amends)).first()
    write = original.writes.filter(resource_type="DocumentReference").first() if original else None
    if write is None:
        raise ValidationFailed(
            [
                error(
                    "amended-note-unknown",
                    "data.amends",
                    f"no signed note {amends!r} for patient {event.patient.id} to amend",
                    code="not-found",
                )
            ]
        )
    return str(write.uid)


def _contract_issues(
    tenant: Tenant, contract: TenantContract, planned: list[PlannedWrite], event: CanonicalEvent
) -> list[Issue]:
    issues: list[Issue] = []
    adapter = adapter_class(tenant.vendor)(_target_stub(tenant))
    try:
        for p in planned:
            issue = _contract_issue(contract, adapter, p, event)
            if issue is not None:
                issues.append(issue)
    finally:
        adapter.close()
    return issues


def _contract_issue(
    contract: TenantContract, adapter, p: PlannedWrite, event: CanonicalEvent
) -> Issue | None:
    decision = contract.decide(p.resource_type, p.operation, p.fields)
    if not decision:
        path = p.path
        if decision.fields:
            path = f"{p.path}.{event_field_name(decision.fields[0])}"
        return error(decision.rule, path, decision.reason, code="business-rule")
    missing = adapter.preflight(_write_request(p, event, ""))
    if missing:
        return error("missing-context", p.path, missing, code="business-rule")
    return None


def _target_stub(tenant: Tenant):
    from writeback.services.targets import target_config_for

    return target_config_for(tenant, enabled=frozenset())


def _write_request(p: PlannedWrite, event: CanonicalEvent, correlation_id: str) -> WriteRequest:
    return WriteRequest(
        write_uid=str(p.uid),
        resource_type=p.resource_type,
        operation=p.operation,
        resource=p.resource,
        correlation_id=correlation_id,
        patient_ref=event.patient.id,
        encounter_ref=event.encounter.id if event.encounter else "",
        target_id=p.target_id,
        base_version=p.base_version,
        context=p.context,
    )


def _dry_run_answer(tenant, event, planned, contract, issues, chash, key) -> IntakeResult:
    writes = []
    software = event.source_kind != BusinessEvent.SourceKind.HUMAN
    for p in planned:
        rule = contract.rule_for(p.resource_type)
        needs_approval = rule.approval_required or (software and p.resource_type != "Provenance")
        writes.append(
            {
                "resource_type": p.resource_type,
                "operation": p.operation,
                "target_id": p.target_id,
                "base_version": p.base_version,
                "risk": rule.risk,
                "approval_required": needs_approval,
                "would_be_state": WriteState.AWAITING_APPROVAL if needs_approval else WriteState.PENDING,
                "contract": {"allowed": True, "pattern": rule.pattern},
                "resource": p.resource,
            }
        )
    body = {
        "dry_run": True,
        "tenant": tenant.slug,
        "type": event.type,
        "source_kind": event.source_kind,
        "tenant_mode": tenant.mode,
        "idempotency_key": key,
        "content_hash": chash,
        "canonical": event.to_json(),
        "writes": writes,
        "issues": [i.as_dict() for i in issues],
    }
    return IntakeResult(200, body)


def _store(
    tenant, event, planned, contract, req, key, chash, initiator, consent, amends_uid, author, event_uid
):
    now = timezone.now()
    drafts: list[audit.AuditDraft] = []
    with transaction.atomic():
        stored = BusinessEvent(
            uid=event_uid,
            tenant=tenant,
            type=event.type,
            idempotency_key=key,
            source_system=(event.source.system if event.source else "") or "",
            source_message_id=event.source.message_id if event.source else None,
            content_hash=chash,
            raw_payload=req.body,
            canonical_payload=event.to_json(),
            patient_ref=event.patient.id,
            patient_identifier=(
                {"system": event.patient.identifier.system, "value": event.patient.identifier.value}
                if event.patient.identifier
                else None
            ),
            encounter_ref=event.encounter.id if event.encounter else "",
            encounter_status=(event.encounter.status or "") if event.encounter else "",
            initiator=initiator,
            initiator_name=initiator.get_username(),
            submitter=req.user,
            submitted_token=req.token,
            acting_system=req.user.get_username(),
            origin_device=event.device.id if event.device else "",
            source_kind=event.source_kind,
            author=author,
            consent=consent.consent,
            consent_snapshot=consent.snapshot(),
            correlation_id=req.correlation_id,
            occurred_at=event.occurred_at,
        )
        stored.save()
        # A patient's first event charts its identity; the tenant's row said whether one is there (a
        # later event's identity agrees with it, or _identity_issues refused the event).
        if event.patient.identifier and not tenant.identity_known:
            PatientIdentity.objects.bulk_create(
                [
                    PatientIdentity(
                        tenant=tenant,
                        patient_ref=event.patient.id,
                        identifier_system=event.patient.identifier.system,
                        identifier_value=event.patient.identifier.value,
                    )
                ],
                ignore_conflicts=True,
            )
        amended = Write.objects.filter(uid=amends_uid).first() if amends_uid else None
        drafts.append(
            audit.draft(
                AuditAction.EVENT_RECEIVED,
                actor=req.user,
                tenant=tenant.slug,
                object_type="event",
                object_id=str(stored.uid),
                event_uid=str(stored.uid),
                correlation_id=req.correlation_id,
                request_id=req.request_id,
                data={
                    "type": event.type,
                    "idempotency_key": key,
                    "content_hash": chash,
                    "initiator": initiator.get_username(),
                    "submitter": req.user.get_username(),
                    "source_kind": event.source_kind,
                    "author": author,
                    **({"token": req.token.prefix} if req.token else {}),
                    "consent": consent.snapshot(),
                    "writes": len(planned),
                },
            )
        )
        writes = ledger_add(
            [planned_write(p, i, stored, tenant, contract, now, amended) for i, p in enumerate(planned)],
            event=stored,
            actor=req.user,
            reason="validated at intake",
            drafts=drafts,
            request_id=req.request_id,
        )
        audit.record_many(drafts)
    return stored, writes


def _event_body(event: BusinessEvent, writes: list[Write], *, duplicate: bool, issues: list[Issue]) -> dict:
    return {
        "id": str(event.uid),
        "tenant": event.tenant.slug,
        "type": event.type,
        "source_kind": event.source_kind,
        "duplicate": duplicate,
        "correlation_id": event.correlation_id,
        "writes": [
            {
                "id": str(w.uid),
                "resource_type": w.resource_type,
                "operation": w.operation,
                "state": w.state,
                "risk": w.risk,
            }
            for w in writes
        ],
        "issues": [i.as_dict() for i in issues if not i.is_error],
    }
