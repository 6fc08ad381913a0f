"""Alert routes and the deliveries that carry alerts to them.

A delivery row is created in the same transaction as the alert change it announces (an alert starts
firing, resolves, or escalates), one per matching route, and is unique per (alert, route, event): an alert
is announced once when it fires and once when it resolves, however often it repeats. The worker's
housekeeping sends pending rows (`deliver_due`): a webhook gets a JSON POST signed with HMAC-SHA256 of
the body (`X-Writeback-Signature: sha256=<hex>`), an email route a message through Django's mail
backend. A failed try is retried with exponential backoff and every try is logged on the row.

Webhook secrets: generated when the route is added and shown once (the receiver needs it to verify),
stored encrypted with WRITEBACK_ALERT_ROUTE_KEY (Fernet), because signing needs the secret itself.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from adapters.http import is_secret_name, redact_url
from writeback.errors import DomainError
from writeback.models import (
    SEVERITY_RANK,
    Alert,
    AlertDelivery,
    AlertRoute,
    AuditAction,
    Severity,
    Tenant,
)
from writeback.services import audit
from writeback.services.permissions import require

SIGNATURE_HEADER = "X-Writeback-Signature"
MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
# A claimed delivery is not picked up by another worker for this long (a worker dying mid-send means
# the receiver may get that message twice, never zero times).
CLAIM_LEASE = timedelta(seconds=60)
TIMEOUT = httpx.Timeout(5.0, connect=2.0)
MAX_LOG = 50


# -- secrets ---------------------------------------------------------------------------------------


def _fernet() -> Fernet:
    material = settings.WRITEBACK_ALERT_ROUTE_KEY or f"alert-routes:{settings.SECRET_KEY}"
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest()))


def seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str:
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken as exc:
        raise DomainError(
            500, "route-secret-unreadable", "the route's secret no longer decrypts: add the route again"
        ) from exc


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- routes ----------------------------------------------------------------------------------------


def check_webhook_url(url: str) -> str:
    """The outbound checks the FHIR client applies, for a URL an operator typed: http(s) only, a host,
    no credentials in it (userinfo, or a secret-looking query parameter), no path tricks."""
    url = (url or "").strip()
    if not url or len(url) > 500:
        raise DomainError(400, "webhook-url-invalid", "give the webhook URL (at most 500 characters)", "url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise DomainError(400, "webhook-url-invalid", f"not a URL: {exc}", "url") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DomainError(400, "webhook-url-invalid", "use http:// or https:// and a host", "url")
    if parsed.userinfo or any(_credential_param(k) for k in parsed.params):
        raise DomainError(
            400,
            "webhook-url-credentials",
            "a webhook URL carries no credentials: the receiver verifies the signature instead",
            "url",
        )
    # httpx removes dot segments while parsing: look at the path as typed.
    typed_path = url.split("?", 1)[0].split("#", 1)[0]
    if "\\" in url or any(s in (".", "..") for s in typed_path.split("/")[3:]) or parsed.fragment:
        raise DomainError(400, "webhook-url-invalid", "no dot segments, backslashes or fragment", "url")
    return url


def _credential_param(name: str) -> bool:
    lowered = name.lower().replace("_", "-")
    return is_secret_name(lowered) or any(w in lowered for w in ("key", "sig", "auth", "session", "pass"))


def _require_manage(actor: Any, tenant: Tenant | None, object_id: str) -> None:
    # Management commands run with shell access to the deployment and act under a system name.
    if not isinstance(actor, str):
        require(
            actor,
            "manage_alert_routes",
            tenant,
            object_type="alert_route",
            object_id=object_id,
            channel="console",
        )


def route_add(
    *,
    name: str,
    actor: Any,
    webhook: str = "",
    email: str = "",
    tenant: Tenant | None = None,
    min_severity: str = Severity.WARNING,
    escalation: bool = False,
) -> tuple[AlertRoute, str]:
    """Adds a route; returns it and, for a webhook, its signing secret (shown this once)."""
    _require_manage(actor, tenant, name)
    name = (name or "").strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_" for c in name):
        raise DomainError(400, "route-name-invalid", "a route name is letters, digits, - and _", "name")
    if bool(webhook) == bool(email):
        raise DomainError(400, "route-target-required", "give either a webhook URL or an email address")
    if min_severity not in Severity.values:
        raise DomainError(400, "severity-invalid", f"severity is one of {', '.join(Severity.values)}")
    secret = ""
    if webhook:
        kind, target = AlertRoute.Kind.WEBHOOK, check_webhook_url(webhook)
        secret = secrets.token_urlsafe(32)
    else:
        kind, target = AlertRoute.Kind.EMAIL, email.strip()
        try:
            validate_email(target)
        except ValidationError as exc:
            raise DomainError(400, "email-invalid", "not an email address", "email") from exc
    with transaction.atomic():
        if AlertRoute.objects.select_for_update().filter(name=name, removed_at__isnull=True).exists():
            raise DomainError(409, "route-exists", f"a route named {name!r} exists: remove it first", "name")
        route = AlertRoute.objects.create(
            name=name,
            tenant=tenant,
            min_severity=min_severity,
            kind=kind,
            target=target,
            escalation=escalation,
            secret_sealed=seal(secret) if secret else "",
            created_by=None if isinstance(actor, str) else actor,
        )
        audit.record(
            AuditAction.ALERT_ROUTE_ADDED,
            actor=actor,
            tenant=tenant.slug if tenant else "",
            object_type="alert_route",
            object_id=name,
            data={
                "kind": kind,
                "target": redact_url(target) if webhook else target,
                "min_severity": min_severity,
                "escalation": escalation,
                "all_tenants": tenant is None,
            },
        )
    return route, secret


def route_remove(*, name: str, actor: Any) -> AlertRoute:
    with transaction.atomic():
        route = (
            AlertRoute.objects.select_for_update(of=("self",))
            .select_related("tenant")
            .filter(name=name, removed_at__isnull=True)
            .first()
        )
        if route is None:
            raise DomainError(404, "route-not-found", f"no route named {name!r}", "name")
        _require_manage(actor, route.tenant, name)
        route.removed_at = timezone.now()
        route.save(update_fields=["removed_at"])
        # Messages not sent yet go nowhere: the route is gone.
        dropped = route.deliveries.filter(status=AlertDelivery.Status.PENDING).update(
            status=AlertDelivery.Status.FAILED, last_error="route removed"
        )
        audit.record(
            AuditAction.ALERT_ROUTE_REMOVED,
            actor=actor,
            tenant=route.tenant.slug if route.tenant else "",
            object_type="alert_route",
            object_id=name,
            data={"kind": route.kind, "pending_dropped": dropped},
        )
    return route


# -- enqueueing ------------------------------------------------------------------------------------


def deliveries_enqueue(alert: Alert, event: str) -> int:
    """Creates the delivery rows for an alert change. Call it inside the transaction making the change:
    the rows exist exactly when the change does. Returns how many routes will be told."""
    escalation = event == AlertDelivery.Event.ESCALATION
    rank = SEVERITY_RANK.get(alert.severity, 0)
    candidates = AlertRoute.objects.filter(removed_at__isnull=True, escalation=escalation).filter(
        Q(tenant_id=alert.tenant_id) | Q(tenant__isnull=True)
    )
    routes = [r for r in candidates if SEVERITY_RANK.get(r.min_severity, 0) <= rank]
    if not routes:
        return 0
    rows = [AlertDelivery(alert=alert, route=r, event=event) for r in routes]
    # The unique (alert, route, event) row makes a second announcement of the same change a no-op.
    AlertDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


# -- sending ---------------------------------------------------------------------------------------


def console_link(alert: Alert) -> str:
    return settings.WRITEBACK_CONSOLE_URL + reverse("console-alert", args=[alert.uid])


def summary(alert: Alert) -> str:
    """What happened, from the alert's kind and numbers only: never its message, which may quote a
    vendor's answer about a patient."""
    where = f" for {alert.resource_type}" if alert.resource_type else ""
    text = f"{alert.get_severity_display()}: {alert.code}{where} on tenant {alert.tenant.slug}"
    if alert.details.get("value") is not None:
        text += f" ({alert.details.get('measure', 'value')} {alert.details['value']}"
        text += f", limit {alert.details.get('limit')})"
    if alert.occurrences > 1:
        text += f"; seen {alert.occurrences} times"
    return text


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def payload(delivery: AlertDelivery) -> dict[str, Any]:
    alert = delivery.alert
    return {
        "delivery": delivery.pk,
        "event": delivery.event,
        "alert": str(alert.uid),
        "tenant": alert.tenant.slug,
        "kind": alert.code,
        "severity": alert.severity,
        "state": "resolved" if delivery.event == AlertDelivery.Event.RESOLVED else "firing",
        "escalation": delivery.event == AlertDelivery.Event.ESCALATION,
        "resource_type": alert.resource_type,
        "occurrences": alert.occurrences,
        "raised_at": _iso(alert.created_at),
        "last_seen_at": _iso(alert.last_seen_at),
        "acknowledged_at": _iso(alert.acknowledged_at),
        "resolved_at": _iso(alert.resolved_at),
        "summary": summary(alert),
        "link": console_link(alert),
    }


@dataclass
class SendResult:
    ok: bool
    status: int | None = None
    error: str = ""


def _send_webhook(delivery: AlertDelivery, body: bytes) -> SendResult:
    route = delivery.route
    try:
        url = check_webhook_url(route.target)
        secret = unseal(route.secret_sealed)
    except DomainError as exc:
        return SendResult(False, error=str(exc))
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        "X-Writeback-Delivery": str(delivery.pk),
        "X-Writeback-Event": delivery.event,
    }
    try:
        # Redirects are not followed: the signed body goes only where the route says.
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return SendResult(False, error=f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return SendResult(True, response.status_code)
    return SendResult(False, response.status_code, f"HTTP {response.status_code}")


def _send_email(delivery: AlertDelivery, data: dict[str, Any]) -> SendResult:
    subject = f"[{data['severity']}] {data['state']}: {data['kind']} on {data['tenant']}"
    if data["escalation"]:
        subject = "ESCALATION " + subject
    lines = [data["summary"], "", *(f"{k}: {v}" for k, v in data.items() if k != "summary")]
    try:
        send_mail(subject, "\n".join(lines), settings.WRITEBACK_ALERT_FROM_EMAIL, [delivery.route.target])
    except Exception as exc:  # any mail backend error is a failed try, retried like a webhook's
        return SendResult(False, error=f"{type(exc).__name__}: {exc}"[:500])
    return SendResult(True)


def backoff(attempts: int) -> timedelta:
    return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts - 1)))


def _claim(delivery: AlertDelivery, now: datetime) -> bool:
    """Compare-and-set on (status, attempts, due): one worker sends a given try."""
    return (
        AlertDelivery.objects.filter(
            pk=delivery.pk,
            status=AlertDelivery.Status.PENDING,
            attempts=delivery.attempts,
            next_attempt_at__lte=now,
        ).update(next_attempt_at=now + CLAIM_LEASE)
        == 1
    )


def deliver_one(delivery: AlertDelivery, now: datetime) -> SendResult:
    data = payload(delivery)
    started = time.monotonic()
    if delivery.route.kind == AlertRoute.Kind.WEBHOOK:
        body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        result = _send_webhook(delivery, body)
    else:
        result = _send_email(delivery, data)
    attempts = delivery.attempts + 1
    entry = {
        "at": now.isoformat(),
        "status": result.status,
        "ok": result.ok,
        "error": result.error,
        "ms": round((time.monotonic() - started) * 1000, 1),
    }
    fields: dict[str, Any] = {"attempts": attempts, "log": [*delivery.log, entry][-MAX_LOG:]}
    if result.ok:
        fields.update(status=AlertDelivery.Status.DELIVERED, delivered_at=now, last_error="")
    elif attempts >= MAX_ATTEMPTS:
        fields.update(status=AlertDelivery.Status.FAILED, last_error=result.error)
    else:
        fields.update(next_attempt_at=now + backoff(attempts), last_error=result.error)
    with transaction.atomic():
        AlertDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(**fields)
        if fields.get("status") == AlertDelivery.Status.FAILED:
            audit.record(
                AuditAction.ALERT_DELIVERY_FAILED,
                actor="system",
                tenant=delivery.alert.tenant.slug,
                object_type="alert",
                object_id=str(delivery.alert.uid),
                data={"route": delivery.route.name, "event": delivery.event, "attempts": attempts},
            )
    return result


def deliver_due(now: datetime | None = None, limit: int = 20, budget_seconds: float = 2.0) -> int:
    """Sends up to `limit` due deliveries (the oldest first); returns how many were tried. It runs in
    the worker's loop, so it starts no new send once `budget_seconds` are spent: a slow receiver delays
    alerts, never writes (one send per pass always goes). The rest wait for the next pass."""
    now = now or timezone.now()
    started = time.monotonic()
    due = list(
        AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now)
        .select_related("alert__tenant", "route")
        .order_by("next_attempt_at", "id")[:limit]
    )
    tried = 0
    for delivery in due:
        if tried and time.monotonic() - started > budget_seconds:
            break
        if _claim(delivery, now):
            deliver_one(delivery, now)
            tried += 1
    return tried
