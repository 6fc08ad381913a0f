"""While the database is unreachable (a restart, a failover, a network cut) the web process answers
`503 Service Unavailable` with `Retry-After`, never a 500 and never a success it could not commit.

Three places see such an error, depending on where it is raised:

- a DRF view (the API): `writeback.api.errors.exception_handler` hands it to `database_unavailable`;
- any other view (the console): `DatabaseUnavailableMiddleware.process_exception`;
- another middleware (loading the session or the user happens before any view): Django turns the
  exception into a response at that layer, through `handler500`, which is `server_error` here.

Nothing here touches the database: the pages are plain strings, not templates whose context processors
would read the session or the user again. An event whose transaction could not commit is answered 503,
and the client sends it again with the same idempotency key; if the commit did land and only its answer
was lost, the retry is recognised as a duplicate and answered with the original event.
"""

import logging
import sys
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from writeback.validation.outcome import single

log = logging.getLogger(__name__)

# What Django raises when it cannot reach the database or loses the connection mid-request.
DB_ERRORS = (OperationalError, InterfaceError)

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Temporarily unavailable · Write-back Console</title></head>
<body><h1>The console is temporarily unavailable</h1>
<p>Its database cannot be reached right now. Nothing you asked for was done: try again in a moment.</p>
<p><a href="">Reload</a></p></body></html>
"""


def retry_after() -> str:
    return str(settings.WRITEBACK_DB_RETRY_AFTER_SECONDS)


def database_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 answer: an OperationOutcome for the API, a short page for people."""
    log.warning(
        "database unavailable during %s %s: %s: %s",
        request.method,
        request.path,
        type(exc).__name__,
        (str(exc).strip().splitlines() or [""])[0][:200],
    )
    if request.path.startswith("/api/"):
        body = single(
            "database-unavailable",
            "The service cannot reach its database right now; nothing was stored. "
            "Send the request again (with the same idempotency key) after Retry-After seconds.",
            code="transient",
        )
        response: HttpResponse = JsonResponse(body, status=503)
    else:
        response = HttpResponse(_PAGE, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = retry_after()
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    """Outermost middleware: views that fail on the database answer 503 instead of 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DB_ERRORS):
            return database_unavailable(request, exception)
        return None


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: Django calls it while handling the exception, so `sys.exc_info()` names it. A
    database error raised in a middleware (before any view) still becomes a 503."""
    exc = sys.exc_info()[1]
    if isinstance(exc, DB_ERRORS):
        return database_unavailable(request, exc)
    return defaults.server_error(request)
