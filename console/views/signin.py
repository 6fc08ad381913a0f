"""The answer to a sign-in that django-axes locked out (AXES_LOCKOUT_CALLABLE): the sign-in page, saying
why and for how long, with 429 and Retry-After. The lockout itself is audited by
`writeback.services.signins.signin_lockout_record` (axes' `user_locked_out` signal)."""

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def locked_out(request: HttpRequest, response: HttpResponse | None = None, credentials=None) -> HttpResponse:
    cooloff = settings.AXES_COOLOFF_TIME
    context = {
        "form": AuthenticationForm(request),
        "locked_out": True,
        "lockout_minutes": max(1, int(cooloff.total_seconds() // 60)),
        "next": request.POST.get("next", ""),
    }
    answer = render(request, "registration/login.html", context, status=429)
    answer["Retry-After"] = str(int(cooloff.total_seconds()))
    return answer
