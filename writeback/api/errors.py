"""Every API error is a FHIR OperationOutcome with our rule code; nothing escapes as a 500 page."""

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from writeback.errors import DomainError
from writeback.middleware_db import DB_ERRORS, database_unavailable
from writeback.services.permissions import ActionRefused
from writeback.states import InvalidTransition
from writeback.validation.outcome import ValidationFailed, operation_outcome, single

log = logging.getLogger(__name__)

_RULES = {
    400: ("bad-request", "invalid"),
    401: ("not-authenticated", "login"),
    403: ("forbidden", "forbidden"),
    404: ("not-found", "not-found"),
    405: ("method-not-allowed", "not-supported"),
    406: ("not-acceptable", "not-supported"),
    409: ("conflict", "conflict"),
    413: ("too-large", "too-costly"),
    415: ("unsupported-media-type", "not-supported"),
    422: ("unprocessable", "invalid"),
    429: ("throttled", "throttled"),
}


def refusal_body(status: int, rule: str, message: str, path: str = "") -> dict:
    """The OperationOutcome of one refusal; its FHIR issue code follows the status."""
    return single(rule, message, path=path, code=_RULES.get(status, ("", "processing"))[1])


class ApiError(exceptions.APIException):
    """An error with our rule code: raise ApiError(403, "consent-revoked", "...")."""

    def __init__(self, status_code: int, rule: str, message: str, path: str = "") -> None:
        self.status_code = status_code
        self.rule = rule
        self.path = path
        super().__init__(message)


def exception_handler(exc, context):
    if isinstance(exc, ValidationFailed):
        set_rollback()
        return Response(operation_outcome(exc.issues), status=exc.status)
    if isinstance(exc, ApiError):
        set_rollback()
        body = refusal_body(exc.status_code, exc.rule, str(exc.detail), exc.path)
        return Response(body, status=exc.status_code)
    if isinstance(exc, DomainError):
        set_rollback()
        return Response(refusal_body(exc.status, exc.rule, str(exc), exc.path), status=exc.status)
    if isinstance(exc, ActionRefused):
        set_rollback()
        return Response(single(exc.rule, str(exc), code="forbidden"), status=403)
    if isinstance(exc, InvalidTransition):
        set_rollback()
        return Response(single("invalid-transition", str(exc), code="conflict"), status=409)
    if isinstance(exc, RequestDataTooBig):
        # Django's own limit, met where something read a form body (the CSRF check of a session caller).
        set_rollback()
        return Response(refusal_body(413, "too-large", str(exc)), status=413)
    if isinstance(exc, SuspiciousOperation):
        set_rollback()
        return Response(single("bad-request", str(exc)[:200], code="invalid"), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        rule, fhir_code = _RULES.get(exc.status_code, ("error", "processing"))
        detail = exc.detail
        if isinstance(exc, exceptions.ValidationError):
            issues = _flatten(detail)
            body = operation_outcome([])
            body["issue"] = [single(rule, msg, path=path, code="invalid")["issue"][0] for path, msg in issues]
        else:
            body = single(rule, str(detail), code=fhir_code)
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response(body, status=exc.status_code, headers=headers)
    if isinstance(exc, DB_ERRORS):
        # The database is away (restart, failover): nothing was stored; the client retries later.
        set_rollback()
        return database_unavailable(context["request"], exc)
    # Anything else is a bug: log it with its traceback, answer a clean OperationOutcome.
    log.exception("unhandled error in %s", context.get("view").__class__.__name__)
    set_rollback()
    return Response(
        single(
            "internal-error", "The server could not process this request; it was logged.", code="exception"
        ),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _flatten(detail, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(detail, list):
        out = []
        for i, value in enumerate(detail):
            if isinstance(value, dict | list):
                out.extend(_flatten(value, f"{prefix}[{i}]"))
            else:
                out.append((prefix, str(value)))
        return out
    return [(prefix, str(detail))]
