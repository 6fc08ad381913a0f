"""Shows times in the operator's own time zone: their stored preference, activated on every request."""

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from console.preferences import is_zone, stored_zone


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
