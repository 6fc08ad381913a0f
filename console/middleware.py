"""Console middleware: the operator's own time zone on every request; deactivated people signed out."""

import contextlib
import zoneinfo
from collections.abc import Callable

from django.contrib.auth import SESSION_KEY, get_user_model, logout
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from console.preferences import is_zone, stored_zone
from writeback.services.permissions import ActionRefused, require


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
