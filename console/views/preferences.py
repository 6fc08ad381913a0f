from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from console.forms import TimezoneForm
from console.middleware import SESSION_KEY


def safe_next(request: HttpRequest, fallback: str = "console-overview") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return redirect(fallback).url


@login_required
@require_POST
def set_timezone(request: HttpRequest) -> HttpResponse:
    """Times are shown in the zone the operator picks; the choice lives in their session."""
    form = TimezoneForm(request.POST)
    if form.is_valid():
        request.session[SESSION_KEY] = form.cleaned_data["tz"]
        messages.success(request, f"Times are now shown in {form.cleaned_data['tz']}.")
    else:
        messages.error(request, "That time zone is not known; times stay as they were.")
    return redirect(safe_next(request))
