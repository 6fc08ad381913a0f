"""What every log line says about where it comes from: correlation id, request id, tenant, write id and
event type, kept in a context variable.

The request middleware sets the request id (one per request: the client's X-Request-ID when it is a
plain token, otherwise a new one; the API, the console and the audit trail all read it from
`request.request_id`) and the correlation id (X-Correlation-ID, or new); intake adds the tenant and the
event type; the sync worker sets all five for each write it processes. `ContextFilter`, installed on the
log handlers (settings.LOGGING), copies them onto every record, so the JSON formatter prints them.
"""

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

FIELDS = ("correlation_id", "request_id", "tenant", "write_id", "event_type")
_context: ContextVar[dict[str, str]] = ContextVar("writeback_log_context", default={})  # noqa: B039
# A client's id goes into logs and the audit trail verbatim: letters, digits and . _ : - only, so it can
# neither forge a log line nor carry free text.
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def current() -> dict[str, str]:
    return dict(_context.get())


def bind(**fields: str) -> None:
    """Adds fields to the current context until the enclosing `bound()` block ends."""
    _context.set({**_context.get(), **{k: str(v) for k, v in fields.items() if v}})


@contextmanager
def bound(**fields: str) -> Iterator[None]:
    token = _context.set({**_context.get(), **{k: str(v) for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


@contextmanager
def for_write(write) -> Iterator[None]:
    """The context of one write, as the worker processes it (fresh: not the claim loop's)."""
    token = _context.set({})
    try:
        bind(
            correlation_id=write.correlation_id,
            tenant=write.tenant.slug,
            write_id=str(write.uid),
            event_type=write.event.type,
        )
        yield
    finally:
        _context.reset(token)


def client_token(value: str | None) -> str:
    """A client-supplied id if it is a plain token, else "" (the caller makes a new one)."""
    return value if value and _TOKEN.fullmatch(value) else ""


class ContextFilter(logging.Filter):
    """Puts the context's fields on every record (empty when unknown), without overriding `extra=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        request = getattr(record, "request", None)
        if request is not None and not context.get("request_id"):
            # Django logs a 4xx/5xx answer after the middleware has returned: the ids are on the request.
            context = {
                "request_id": getattr(request, "request_id", ""),
                "correlation_id": getattr(request, "correlation_id", ""),
            }
        for name in FIELDS:
            if not getattr(record, name, ""):
                setattr(record, name, context.get(name, ""))
        return True


_QUERY = re.compile(r"\?[^\s\"']*")


class NoQueryStrings(logging.Filter):
    """Request lines are logged without their query strings: a console search (`?q=`) may carry a
    patient's name or identifier. For the development server's access log (django.server)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_QUERY.sub("?...", a) if isinstance(a, str) else a for a in record.args)
        return True


class RequestContextMiddleware:
    """First in the chain: every log line of the request carries its ids; the answer names the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = client_token(request.headers.get("X-Request-ID")) or uuid.uuid4().hex
        request.correlation_id = client_token(request.headers.get("X-Correlation-ID")) or uuid.uuid4().hex
        with bound(request_id=request.request_id, correlation_id=request.correlation_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


def request_id(request: HttpRequest) -> str:
    """The request's one id (set by the middleware; a request built without it gets one now)."""
    rid = getattr(request, "request_id", "")
    if not rid:
        rid = request.request_id = client_token(request.headers.get("X-Request-ID")) or uuid.uuid4().hex
    return rid


def correlation_id(request: HttpRequest) -> str:
    cid = getattr(request, "correlation_id", "")
    if not cid:
        cid = request.correlation_id = (
            client_token(request.headers.get("X-Correlation-ID")) or uuid.uuid4().hex
        )
    return cid
