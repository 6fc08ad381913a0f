"""The one decorator every console view wears: signed in, holding a role for the page, and domain
refusals turned into clear answers (never a 500)."""

import logging
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.middleware import HtmxDetails

from writeback.errors import DomainError
from writeback.services.permissions import ActionRefused, require
from writeback.states import InvalidTransition

log = logging.getLogger(__name__)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def console_view(action: str = "view") -> Callable:
    """Checks that a person (not a client app) is signed in, and their role for `action` (every page
    needs one; per-tenant checks happen where the tenant is known: the fetch helpers and the services).
    Refusals are audited by `require()`."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(request: HtmxHttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                for needed in ("use_console", action):
                    require(
                        request.user,
                        needed,
                        None,
                        object_type="page",
                        object_id=view.__name__,
                        channel="console",
                    )
                return view(request, *args, **kwargs)
            except ActionRefused as exc:
                return problem(request, f"Refused: {exc}.", status=403, title="Not allowed")
            except DomainError as exc:
                if exc.status == 429:
                    return slow_down(request, exc)
                return not_done(request, _sentence(str(exc)), status=_status(exc.status))
            except InvalidTransition as exc:
                return not_done(request, _sentence(str(exc)), status=409)

        return wrapped

    return decorator


def problem(request: HtmxHttpRequest, message: str, *, status: int, title: str) -> HttpResponse:
    """An error the person can act on. htmx requests get it in the page's message region."""
    messages.error(request, message)
    if getattr(request, "htmx", False):
        response = render(request, "console/_messages.html", {"flash_only": True}, status=status)
        response["HX-Retarget"] = "#flash"
        response["HX-Reswap"] = "innerHTML"
        return response
    return render(request, "console/problem.html", {"title": title, "message": message}, status=status)


def slow_down(request: HtmxHttpRequest, exc: DomainError) -> HttpResponse:
    """A rate limit: 429 with Retry-After, and the reason in the page's message region."""
    response = problem(request, _sentence(str(exc)), status=429, title="Too many requests")
    response["Retry-After"] = str(getattr(exc, "retry_after", 60))
    return response


def not_done(request: HtmxHttpRequest, message: str, *, status: int) -> HttpResponse:
    """A request the domain turned down: back to the form with the reason (or the reason alone)."""
    back = request.headers.get("Referer", "")
    if (
        request.method == "POST"
        and not getattr(request, "htmx", False)
        and back
        and url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure())
    ):
        messages.error(request, message)
        return redirect(back)
    return problem(request, message, status=status, title="Not done")


def _status(status: int) -> int:
    return status if 400 <= status < 500 else 409


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return "The request could not be carried out."
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
