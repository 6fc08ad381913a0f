"""Sign-in lockouts (django-axes) in the audit trail.

Axes counts failed sign-ins per username and client address and refuses the pair for a cool-off time
once AXES_FAILURE_LIMIT is reached; its `user_locked_out` signal (connected in `WritebackConfig.ready`)
lands here for every refused attempt, so the trail shows when a lockout began and how long it was pushed.
"""

from typing import Any

from django.conf import settings

from writeback import logcontext
from writeback.models import AuditAction, AuditEntry
from writeback.services import audit


def signin_lockout_record(*, username: str | None, ip_address: str | None, request: Any = None) -> AuditEntry:
    failures = getattr(request, "axes_failures_since_start", None)
    return audit.record(
        AuditAction.LOGIN_LOCKED_OUT,
        actor="anonymous",
        object_type="user",
        object_id=(username or "")[:64],
        request_id=logcontext.request_id(request) if request is not None else "",
        data={
            "username": (username or "")[:150],
            "ip_address": ip_address or "",
            "failures": failures,
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "lockout_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
            "path": getattr(request, "path", ""),
        },
    )
