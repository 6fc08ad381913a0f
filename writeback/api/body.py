"""The request gate: what a request must be before any view, form, service or database sees it.

One gate for the API and the console (docs/security.md, "Hostile input"):

- size: each endpoint kind has a body limit (`413`): `events` (WRITEBACK_MAX_EVENT_BYTES), `actions`
  (every other API write, consents included: WRITEBACK_MAX_ACTION_BYTES) and `forms` (console and
  admin POSTs: WRITEBACK_MAX_FORM_BYTES). DRF reads request bodies itself, so Django's upload limit
  never applies to the API: the middleware checks the declared length and the parser reads no more
  than the limit.
- JSON (the API's parser, and the JSON a console form carries): UTF-8, no NaN or Infinity, no number
  that overflows, at most WRITEBACK_MAX_JSON_DEPTH nested arrays and objects (`400`).
- text, wherever it sits: no NUL, no other C0 control character (tab, CR and LF are allowed in values,
  never in names), no lone UTF-16 surrogate, and no string longer than WRITEBACK_MAX_STRING_CHARS;
  refused with `422` naming the field. PostgreSQL cannot store a NUL in text or JSON; SQLite can, and
  the same input is refused on both.
- form bodies: urlencoded or multipart, valid UTF-8 (`400`); anything else with a body is `415`.
- query parameters, headers and cookies: the same character rules, refused with `400` naming them.

Refusals answer before the view runs, so nothing is read from or written to the database; they are not
audited (nobody was refused an action, the request was never one). The API answers a FHIR
OperationOutcome, the console a short page (or, for htmx, a message in the page's flash region).
"""

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve
from django.utils.html import format_html
from rest_framework.parsers import BaseParser

from writeback.errors import DomainError

EVENTS, ACTIONS, FORMS = "events", "actions", "forms"
# A query value or a header this long is not a filter or an id: someone is probing.
MAX_QUERY_CHARS = 2048
# Object member names and form field names are names, never text.
MAX_NAME_CHARS = 256

# C0 controls but tab, LF and CR, and UTF-16 surrogates (JSON's "\ud800" escape makes a lone one).
_BAD_IN_VALUE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_BAD_IN_NAME = re.compile(r"[\x00-\x1f\ud800-\udfff]")
# JSON escapes of the C0 controls and surrogates a value may not hold ("\u0000", "\b", "\f", "\uD800"),
# and raw surrogates (text given as str): json.loads refuses raw controls, so text without these holds
# none in its values.
_ESCAPED_SUSPECT = re.compile(r"\\(?:u(?:00[01]|[dD][89a-fA-F])|[bf])|[\ud800-\udfff]")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class BodyRefused(DomainError):
    """A request refused at the gate: status (400, 413, 415 or 422), rule code, message, path."""


def max_bytes(kind: str) -> int:
    return {
        EVENTS: settings.WRITEBACK_MAX_EVENT_BYTES,
        ACTIONS: settings.WRITEBACK_MAX_ACTION_BYTES,
        FORMS: settings.WRITEBACK_MAX_FORM_BYTES,
    }[kind]


# -- text -----------------------------------------------------------------------------------------------


def _shown(text: str) -> str:
    """A name or path safe to put in a message: control characters and surrogates written as escapes."""
    return _BAD_IN_NAME.sub(lambda m: f"\\u{ord(m.group()):04x}", text[:MAX_NAME_CHARS])


def _character(char: str) -> str:
    if char == "\x00":
        return "a NUL character"
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X}), which is not Unicode text"
    return f"a control character (U+{ord(char):04X})"


def check_text(
    value: str, path: str, *, limit: int, name: bool = False, status: int = 422, rule: str = ""
) -> None:
    """Refuses a string PostgreSQL cannot store or nobody should: see the module's docstring. Names
    (`name=True`) may not hold tab, CR or LF either."""
    bad = (_BAD_IN_NAME if name else _BAD_IN_VALUE).search(value)
    if bad:
        message = f"{_shown(path)} contains {_character(bad.group())}"
        raise BodyRefused(status, rule or "invalid-character", message, _shown(path))
    if len(value) > limit:
        message = f"{_shown(path)} is {len(value)} characters long; the limit is {limit}"
        raise BodyRefused(status, rule or "too-long", message, _shown(path))


# -- JSON -----------------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} overflows a number")
    return value


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def string_limit(kind: str) -> int:
    """Longest string accepted: a note may fill its whole event; elsewhere WRITEBACK_MAX_STRING_CHARS."""
    return max_bytes(EVENTS) if kind == EVENTS else settings.WRITEBACK_MAX_STRING_CHARS


def _plainly_fine(value: Any, text: str, kind: str) -> bool:
    """The common case, decided without building a path: nothing too deep or too long, no name with a
    control character, and the JSON text escapes none a value may not hold. False means "look closer",
    not "refuse"."""
    if _ESCAPED_SUSPECT.search(text):
        return False
    depth_limit, longest = settings.WRITEBACK_MAX_JSON_DEPTH, string_limit(kind)
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth >= depth_limit:
            return False
        children = node.items() if type(node) is dict else enumerate(node)
        for key, child in children:
            if type(key) is str and (len(key) > MAX_NAME_CHARS or _BAD_IN_NAME.search(key)):
                return False
            kind_of = type(child)
            if kind_of is dict or kind_of is list:
                stack.append((child, depth + 1))
            elif kind_of is str and len(child) > longest:
                return False
    return True


def check_json(value: Any, *, kind: str, path: str = "") -> None:
    """Depth, names and strings of parsed JSON, walked without recursion (so depth cannot hurt us)."""
    depth_limit = settings.WRITEBACK_MAX_JSON_DEPTH
    longest = string_limit(kind)
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= depth_limit:
                raise BodyRefused(
                    400,
                    "too-deep",
                    f"the JSON nests more than {depth_limit} arrays and objects deep",
                    _shown(where),
                )
            if isinstance(node, dict):
                for key, child in node.items():
                    check_text(key, _child(where, key), limit=MAX_NAME_CHARS, name=True)
                    stack.append((child, _child(where, key), depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(node))
        elif isinstance(node, str):
            check_text(node, where or "body", limit=longest)


def parse_json(raw: bytes | str, *, kind: str, what: str = "the body") -> Any:
    """JSON text to Python values, or BodyRefused: not UTF-8, not JSON, NaN or an overflowing number
    (400), too deep (400), or a bad string (422)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyRefused(400, "invalid-json", f"{what} is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        limit = settings.WRITEBACK_MAX_JSON_DEPTH
        raise BodyRefused(
            400, "too-deep", f"{what} nests more than {limit} arrays and objects deep"
        ) from None
    except ValueError as exc:  # JSONDecodeError, NaN, an overflowing float, an int of 4300+ digits
        raise BodyRefused(400, "invalid-json", f"{what} is not valid JSON: {str(exc)[:200]}") from None
    if isinstance(value, dict | list) and _plainly_fine(value, raw, kind):
        return value
    check_json(value, kind=kind)
    return value


class GuardedJSONParser(BaseParser):
    """DRF's JSON parser behind the gate: reads at most the view's limit, then `parse_json`."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        kind = body_kind((parser_context or {}).get("view"))
        limit = max_bytes(kind)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise BodyRefused(413, "too-large", f"the body exceeds the limit of {limit} bytes")
        return parse_json(raw, kind=kind)


class GuardedFhirJSONParser(GuardedJSONParser):
    media_type = "application/fhir+json"


# -- the middleware -------------------------------------------------------------------------------------


def is_api(view_class: type | None) -> bool:
    # Imported here: DRF's views module reads DEFAULT_PARSER_CLASSES, which names this module.
    from rest_framework.views import APIView

    return view_class is not None and issubclass(view_class, APIView)


def body_kind(view: Any) -> str:
    """An API view's `body_kind` (default `actions`); every other view takes console forms."""
    cls = view if isinstance(view, type) else type(view)
    return getattr(cls, "body_kind", ACTIONS) if is_api(cls) else FORMS


def _view_class(request: HttpRequest) -> type | None:
    try:
        func = resolve(request.path_info).func
    except Resolver404:
        return None
    return getattr(func, "cls", None) or getattr(func, "view_class", None) or type(func)


def _check_headers(request: HttpRequest) -> None:
    # Their length is the web server's business (gunicorn: 8190 bytes a field); their characters ours.
    for name, value in request.headers.items():
        check_text(value, name, limit=1 << 16, status=400, rule="invalid-header")
    # A quoted cookie value may spell a NUL as "\000", which only parsing reveals (a session key with one
    # fails the session lookup on PostgreSQL).
    for name, value in request.COOKIES.items():
        check_text(name, f"cookie {name}", limit=MAX_NAME_CHARS, name=True, status=400, rule="invalid-cookie")
        check_text(value, f"cookie {name}", limit=1 << 16, status=400, rule="invalid-cookie")


def _check_query(request: HttpRequest) -> None:
    for name, values in request.GET.lists():
        check_text(name, name, limit=MAX_NAME_CHARS, name=True, status=400, rule="invalid-parameter")
        for value in values:
            check_text(value, name, limit=MAX_QUERY_CHARS, status=400, rule="invalid-parameter")


def _check_fields(fields: Iterable[tuple[str, str]]) -> None:
    for name, value in fields:
        check_text(name, name, limit=MAX_NAME_CHARS, name=True)
        check_text(value, name, limit=string_limit(FORMS))


def _check_form(request: HttpRequest, content_type: str) -> None:
    if content_type not in _FORM_TYPES:
        raise BodyRefused(415, "unsupported-media-type", "send the form as application/x-www-form-urlencoded")
    raw = request.body
    try:
        text = raw.decode("utf-8")
        if content_type == _FORM_TYPES[0]:
            # Django would read bad bytes as U+FFFD and carry on; we refuse them.
            fields = parse_qsl(
                text,
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
            )
        else:
            fields = [(name, value) for name, values in request.POST.lists() for value in values]
    except UnicodeDecodeError:
        raise BodyRefused(400, "invalid-encoding", "the form is not UTF-8") from None
    except (ValueError, MultiPartParserError, SuspiciousOperation) as exc:  # too many fields, bad multipart
        raise BodyRefused(400, "invalid-form", f"the form cannot be read: {str(exc)[:200]}") from None
    _check_fields(fields)


def check_request(request: HttpRequest) -> None:
    """Headers, query parameters, and the body's size (and, for a form, its fields); BodyRefused."""
    _check_headers(request)
    _check_query(request)
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BodyRefused(400, "invalid-length", "Content-Length is not a number") from None
    if length <= 0:
        return
    # Resolved only for a body: its limit and its checks depend on the view that would read it.
    view_class = _view_class(request)
    if view_class is None:
        return  # no view will read it (a 404)
    kind = body_kind(view_class)
    limit = max_bytes(kind)
    if length > limit:
        raise BodyRefused(413, "too-large", f"the body is {length} bytes; the limit is {limit}")
    if kind == FORMS:
        _check_form(request, (request.content_type or "").lower())


def _refusal(request: HttpRequest, exc: BodyRefused, api: bool) -> HttpResponse:
    if api:
        from writeback.api.errors import refusal_body  # it imports DRF's views: see is_api

        return JsonResponse(refusal_body(exc.status, exc.rule, str(exc), exc.path), status=exc.status)
    message = f"{str(exc)[0].upper()}{str(exc)[1:]}. Nothing was changed."
    if request.headers.get("HX-Request") == "true":
        # The console's htmx forms swap 4xx answers into the page: show the reason in its message region.
        response = HttpResponse(
            format_html(
                '<div class="flash flash-error" role="alert"><span class="flash-icon" aria-hidden="true">✕'
                '</span><span class="flash-text">{}</span></div>',
                message,
            ),
            status=exc.status,
        )
        response["HX-Retarget"] = "#flash"
        response["HX-Reswap"] = "innerHTML"
        return response
    # No base template: it would read the session and the user, which this request may not be fit for.
    html = render_to_string("refused.html", {"message": message, "status": exc.status})
    return HttpResponse(html, status=exc.status)


class RequestGateMiddleware:
    """Runs `check_request` on every request before the session, the user or a view is touched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            check_request(request)
        except BodyRefused as exc:
            api = request.path_info.startswith("/api/") or is_api(_view_class(request))
            return _refusal(request, exc, api)
        return self.get_response(request)
