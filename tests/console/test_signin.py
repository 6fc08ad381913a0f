"""Sign-in throttling (django-axes, per username and address, audited), idle sessions signed out, and
the OpenAPI schema for signed-in callers only."""

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.test import Client

from console.middleware import LAST_ACTIVITY
from tests.console.conftest import HTMX, client_for
from writeback.models import AuditEntry

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-only"


def sign_in(client: Client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def lockouts() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action="login.locked_out").order_by("seq"))


def test_five_failures_lock_the_username_from_that_address(client, clinician, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        assert sign_in(client, "amy.clinician", "wrong").status_code == 200
    assert lockouts() == []
    fifth = sign_in(client, "amy.clinician", "wrong")
    assert fifth.status_code == 429
    # Even the right password is refused now, with the reason and how long.
    r = sign_in(client, "amy.clinician", PASSWORD)
    assert r.status_code == 429 and int(r["Retry-After"]) == 15 * 60
    assert b"Too many failed sign-ins" in r.content and b"locked for 15 minutes" in r.content
    assert SESSION_KEY not in client.session
    assert client.get("/").status_code == 302  # still signed out
    entries = lockouts()
    assert len(entries) == 2
    assert {(e.data["username"], e.data["ip_address"]) for e in entries} == {("amy.clinician", "10.0.0.1")}
    assert entries[0].data["failures"] == 5 and entries[0].actor == "anonymous"


def test_the_lockout_is_per_username_and_address(client, clinician, clinician2):
    for _ in range(5):
        sign_in(client, "amy.clinician", "wrong")
    assert sign_in(Client(), "amy.clinician", PASSWORD, address="10.0.0.2").status_code == 302
    assert sign_in(Client(), "bob.clinician", PASSWORD, address="10.0.0.1").status_code == 302


def test_the_admin_sign_in_is_locked_too(client, clinician):
    clinician.is_staff = True
    clinician.save()
    for _ in range(5):
        sign_in(client, "amy.clinician", "wrong")
    r = Client().post(
        "/admin/login/", {"username": "amy.clinician", "password": PASSWORD}, REMOTE_ADDR="10.0.0.1"
    )
    assert r.status_code == 429
    assert len(lockouts()) == 2


def test_a_success_resets_the_count(client, clinician):
    for _ in range(4):
        sign_in(client, "amy.clinician", "wrong")
    assert sign_in(client, "amy.clinician", PASSWORD).status_code == 302
    other = Client()
    for _ in range(4):
        assert sign_in(other, "amy.clinician", "wrong").status_code == 200
    assert lockouts() == []


def test_the_lockout_ends_after_the_cool_off(client, clinician, settings):
    for _ in range(5):
        sign_in(client, "amy.clinician", "wrong")
    assert sign_in(client, "amy.clinician", PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16)
    )
    assert sign_in(client, "amy.clinician", PASSWORD).status_code == 302


# -- idle sessions ------------------------------------------------------------------------------------


def set_last_activity(client: Client, seconds_ago: float) -> None:
    session = client.session
    session[LAST_ACTIVITY] = time.time() - seconds_ago
    session.save()


def test_an_idle_session_is_signed_out(clinician):
    c = client_for(clinician)
    assert c.get("/").status_code == 200
    assert LAST_ACTIVITY in c.session
    set_last_activity(c, 31 * 60)
    r = c.get("/writes/")
    assert r.status_code == 302 and r.url.startswith("/login/?next=/writes/")
    assert SESSION_KEY not in c.session
    assert b"signed out after 30 minutes without activity" in c.get(r.url).content
    assert c.get("/").status_code == 302


def test_an_idle_htmx_request_sends_the_page_to_sign_in(clinician):
    c = client_for(clinician)
    c.get("/")
    set_last_activity(c, 31 * 60)
    r = c.get("/", **HTMX)
    assert r.status_code == 204 and r["HX-Redirect"].startswith("/login/?next=")


def test_activity_keeps_a_session_but_background_refreshes_do_not(clinician):
    c = client_for(clinician)
    c.get("/")
    set_last_activity(c, 29 * 60)
    assert c.get("/", HTTP_X_BACKGROUND_REFRESH="1", **HTMX).status_code == 200  # the dashboard's poll
    assert time.time() - c.session[LAST_ACTIVITY] > 28 * 60  # not counted
    assert c.get("/writes/").status_code == 200  # a click is
    assert time.time() - c.session[LAST_ACTIVITY] < 60
    set_last_activity(c, 31 * 60)
    assert c.get("/", HTTP_X_BACKGROUND_REFRESH="1", **HTMX).status_code == 204


def test_the_idle_limit_is_a_setting(clinician, settings):
    settings.WRITEBACK_SESSION_IDLE_MINUTES = 5
    c = client_for(clinician)
    c.get("/")
    set_last_activity(c, 4 * 60)
    assert c.get("/").status_code == 200
    set_last_activity(c, 6 * 60)
    assert c.get("/").status_code == 302


# -- the OpenAPI schema -------------------------------------------------------------------------------


def test_the_schema_needs_a_signed_in_caller(client, clinician, api):
    assert client.get("/api/schema/").status_code == 401
    assert client_for(clinician).get("/api/schema/").status_code == 200
    r = api.get("/api/schema/")
    assert r.status_code == 200 and b"/api/v1/events" in r.content
    bad = Client().get("/api/schema/", HTTP_AUTHORIZATION="Token not-a-real-token")
    assert bad.status_code == 401 and b"/api/v1/events" not in bad.content
