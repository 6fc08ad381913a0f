"""Per-request console concerns: the operator's own time zone, signing out idle sessions, and signing
out people deactivated while signed in."""

import contextlib
import time
import zoneinfo
from collections.abc import Callable
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import SESSION_KEY, get_user_model, logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils import timezone

from console.preferences import is_zone, stored_zone
from writeback.services.permissions import ActionRefused, require

LAST_ACTIVITY = "last_activity"
# Activity is written to the session at most this often: one session save per minute, not per request.
ACTIVITY_GRANULARITY_S = 60


class UserTimezoneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # None: the operator has no zone yet (the page then asks the browser for it, once).
        name = stored_zone(getattr(request, "user", None))
        request.operator_tz = name if is_zone(name) else None
        if request.operator_tz:
            timezone.activate(zoneinfo.ZoneInfo(request.operator_tz))
        else:
            timezone.deactivate()  # settings.TIME_ZONE (UTC)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def mark_signed_in(sender, request: HttpRequest, user, **kwargs) -> None:
    """A sign-in is activity (connected to `user_logged_in` in `ConsoleConfig.ready`)."""
    if hasattr(request, "session"):
        request.session[LAST_ACTIVITY] = time.time()


class IdleSessionTimeoutMiddleware:
    """Signs a person out after WRITEBACK_SESSION_IDLE_MINUTES without a request of their own.

    Background refreshes (the overview's poll sends `X-Background-Refresh`) are not activity, so a tab
    left open on a screen does not keep its session, and the patient data on it, alive for ever."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not hasattr(request, "session"):
            return self.get_response(request)
        now = time.time()
        idle_limit = settings.WRITEBACK_SESSION_IDLE_MINUTES * 60
        last = request.session.get(LAST_ACTIVITY)
        if last is not None and now - float(last) > idle_limit:
            logout(request)
            minutes = settings.WRITEBACK_SESSION_IDLE_MINUTES
            messages.info(request, f"You were signed out after {minutes} minutes without activity.")
            if getattr(request, "htmx", False):
                # A swapped-in fragment cannot show the sign-in page: send the whole page there.
                login = f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': request.get_full_path()})}"
                return HttpResponse(status=204, headers={"HX-Redirect": login})
            return self.get_response(request)
        background = request.headers.get("X-Background-Refresh") == "1"
        if not background and (last is None or now - float(last) >= ACTIVITY_GRANULARITY_S):
            request.session[LAST_ACTIVITY] = now
        return self.get_response(request)


class DeactivatedSessionMiddleware:
    """A person deactivated while signed in is signed out on their next request, and the refusal is
    audited (`account-inactive`): Django alone would quietly treat the session as anonymous."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user_id = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
        if user_id is not None and not request.user.is_authenticated:
            person = get_user_model().objects.filter(pk=user_id, is_active=False).first()
            if person is not None:
                logout(request)
                # Audited; the request goes on as anonymous (to the sign-in page).
                with contextlib.suppress(ActionRefused):
                    require(
                        person,
                        "use_console",
                        None,
                        object_type="page",
                        object_id=request.path[:64],
                        channel="console",
                    )
        return self.get_response(request)
