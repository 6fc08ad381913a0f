"""Reads: the querysets the API and the console show, scoped to what the person may see."""

from django.db.models import Q, QuerySet

from writeback.models import ApiToken, AuditEntry, BusinessEvent, Tenant, Write
from writeback.services.tenants import tenants_for_user


def tenants_visible_to(user, token: ApiToken | None = None) -> QuerySet[Tenant]:
    tenants = tenants_for_user(user)
    if token is not None:
        scoped = list(token.tenants.values_list("pk", flat=True))
        if scoped:
            tenants = tenants.filter(pk__in=scoped)
    return tenants


def writes_visible_to(user, token: ApiToken | None = None) -> QuerySet[Write]:
    return Write.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant", "event")


def events_visible_to(user, token: ApiToken | None = None) -> QuerySet[BusinessEvent]:
    return BusinessEvent.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant")


def write_search(qs: QuerySet[Write], text: str) -> QuerySet[Write]:
    """Free-text search on ids and clinical keys: write/event id, idempotency key, correlation id,
    patient id or MRN, EHR resource id (optionally `id/_history/version`)."""
    text = text.strip()
    if not text:
        return qs
    resource_id, _, version = text.partition("/_history/")
    q = (
        Q(correlation_id=text)
        | Q(patient_ref=text)
        | Q(target_resource_id=resource_id)
        | Q(event__idempotency_key=text)
        | Q(event__source_message_id=text)
        | Q(event__patient_identifier__value=text)
    )
    if version:
        q = Q(target_resource_id=resource_id, target_version=version)
    if _looks_like_uuid(text):
        q |= Q(uid=text) | Q(event__uid=text)
    return qs.filter(q)


def audit_for_write(write: Write) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(write_uid=str(write.uid)).order_by("seq")


def _looks_like_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
