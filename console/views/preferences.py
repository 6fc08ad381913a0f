"""The operator's own settings. Any console role may set their own time zone; nothing here is
clinical, so choices are not audited (a refusal is, by `console_view`)."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.forms import TimezoneForm
from console.preferences import detect_zone, is_zone, preference_of, save_zone


def safe_next(request: HttpRequest, fallback: str = "console-overview") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    own = reverse("console-set-timezone")
    if (
        target
        and not target.startswith(own)
        and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    ):
        return target
    return redirect(fallback).url


@console_view()
@require_http_methods(["GET", "POST"])
def set_timezone(request: HtmxHttpRequest) -> HttpResponse:
    """Shows and saves the zone every time in the console is shown in (kept across sign-ins)."""
    current = request.operator_tz
    if request.method == "POST":
        form = TimezoneForm(request.POST, current=current)
        if form.is_valid():
            save_zone(request.user, form.cleaned_data["tz"])
            messages.success(request, f"Times are now shown in {form.cleaned_data['tz']}.")
            return redirect(safe_next(request))
        status = 400
    else:
        form = TimezoneForm(initial={"tz": current or "UTC", "next": safe_next(request)}, current=current)
        status = 200
    context = {"form": form, "preference": preference_of(request.user)}
    return render(request, "console/preferences.html", context, status=status)


@console_view()
@require_POST
def detect_timezone(request: HtmxHttpRequest) -> HttpResponse:
    """The browser's zone (posted once by console.js) for an operator who has none: 204, nothing shown."""
    name = request.POST.get("tz", "").strip()
    if not is_zone(name):
        return HttpResponse(status=400)
    detect_zone(request.user, name)
    return HttpResponse(status=204)
