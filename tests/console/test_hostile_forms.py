"""The request gate in the console: NUL, control characters, over-long values, bodies over the limit and
bytes that are not UTF-8 are refused before any form or service sees them, with a message the operator
can act on (in the page's message region for htmx); JSON typed into a form passes the same checks as
the API's bodies. Nothing is written; on PostgreSQL a NUL used to be a 500."""

import json

import pytest
from django.test import Client

from tests.console.conftest import HTMX, client_for, committed, failed
from writeback.models import Approval, Compensation, KillSwitch, Tenant, Write

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def med(make):
    return make("medication.reconciled")


def test_a_nul_in_an_htmx_form_is_a_message_in_the_flash_region(med, clinician2):
    r = client_for(clinician2).post(f"/writes/{med.uid}/approve", {"rationale": "ok\x00"}, **HTMX)
    assert r.status_code == 422
    assert r["HX-Retarget"] == "#flash" and r["HX-Reswap"] == "innerHTML"
    text = r.content.decode()
    assert 'role="alert"' in text and "Rationale contains a NUL character. Nothing was changed." in text
    assert not Approval.objects.exists()
    assert Write.objects.get(pk=med.pk).state == "awaiting_approval"


def test_a_control_character_without_htmx_is_a_refusal_page(med, clinician2):
    r = client_for(clinician2).post(f"/writes/{med.uid}/approve", {"rationale": "ok\x1b[31m"})
    assert r.status_code == 422
    assert b"Request refused" in r.content and b"a control character (U+001B)" in r.content
    assert not Approval.objects.exists()


def test_tab_and_newlines_in_a_reason_are_text(med, clinician2):
    r = client_for(clinician2).post(f"/writes/{med.uid}/approve", {"rationale": "Reviewed.\r\n\tDose ok."})
    assert r.status_code == 302
    assert Approval.objects.get().rationale == "Reviewed.\r\n\tDose ok."


def test_a_form_over_the_limit_is_413(med, clinician2, settings):
    settings.WRITEBACK_MAX_FORM_BYTES = 2048
    r = client_for(clinician2).post(f"/writes/{med.uid}/approve", {"rationale": "x" * 3000})
    assert r.status_code == 413 and b"the limit is 2048" in r.content
    assert not Approval.objects.exists()


def test_an_overlong_value_is_422_naming_the_field(med, clinician2, settings):
    settings.WRITEBACK_MAX_STRING_CHARS = 500
    r = client_for(clinician2).post(f"/writes/{med.uid}/approve", {"rationale": "x" * 501})
    assert r.status_code == 422 and b"Rationale is 501 characters long; the limit is 500" in r.content
    assert not Approval.objects.exists()


@pytest.mark.parametrize("raw", [b"rationale=caf%E9", b"rationale=caf\xe9", b"rationale=%ED%A0%80"])
def test_a_form_that_is_not_utf8_is_400(med, clinician2, raw):
    """Django would read these bytes as U+FFFD and carry on; the gate refuses them."""
    r = client_for(clinician2).generic("POST", f"/writes/{med.uid}/approve", raw, content_type=FORM)
    assert r.status_code == 400 and b"The form is not UTF-8" in r.content
    assert not Approval.objects.exists()


def test_a_json_body_to_a_console_form_is_415(med, clinician2):
    r = client_for(clinician2).generic(
        "POST", f"/writes/{med.uid}/approve", json.dumps({"rationale": "ok"}), content_type="application/json"
    )
    assert r.status_code == 415
    assert not Approval.objects.exists()


def test_a_nul_in_the_login_form_is_refused(db, clinician):
    r = Client().post("/login/", {"username": "amy.clinician\x00", "password": "pw-for-tests-only"})
    assert r.status_code == 422 and b"Username contains a NUL character" in r.content


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        ('{"resourceType": "DocumentReference", "description": "a\\u0000b"}', "description contains a NUL"),
        ('{"resourceType": "DocumentReference", "description": "\\ud800"}', "lone surrogate"),
        ("[" * 5000 + "]" * 5000, "nests more than 32"),
        ('{"valueQuantity": {"value": NaN}}', "is not valid JSON"),
    ],
)
def test_json_typed_into_the_replay_form_passes_the_gate(make, engineer, payload, said):
    broken = failed(make("note.signed"))
    before = Write.objects.count()
    r = client_for(engineer).post(
        f"/writes/{broken.uid}/replay/run",
        {"mode": "edit", "payload": payload, "reason": "fix", "scope": "write"},
    )
    assert r.status_code == 422 and said in r.content.decode()
    assert Write.objects.count() == before


def test_json_typed_into_a_correction_passes_the_gate(make, clinician2):
    note = committed(make("note.signed"), resource_id="doc-9")
    data = json.dumps({"description": "fixed\x07"})
    r = client_for(clinician2).post(
        f"/writes/{note.uid}/correction/confirm", {"data": data, "reason": "typo", "confirm": "on"}
    )
    assert r.status_code == 422 and "The corrected value: description contains a control character" in (
        r.content.decode()
    )
    assert not Compensation.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "/writes/?q=a%00b",
        "/writes/?tenant=%00",
        "/audit/?actor=x%00",
        "/alerts/?status=%07",
        "/approvals/?page=%00",
    ],
)
def test_a_nul_in_a_console_query_is_400(admin_user, url):
    r = client_for(admin_user).get(url)
    assert r.status_code == 400 and b"Request refused" in r.content


def test_a_session_cookie_spelling_a_nul_is_400(clinician):
    """A quoted cookie may write NUL as \\000: the session lookup with it fails on PostgreSQL."""
    r = client_for(clinician).get("/writes/", HTTP_COOKIE='sessionid="abc\\000defghijkl"')
    assert r.status_code == 400


def test_a_kill_switch_form_with_a_nul_tenant_changes_nothing(engineer, tenant):
    r = client_for(engineer).post(
        "/kill-switches/engage",
        {"scope": "tenant", "tenant": "generic-main\x00", "behaviour": "hold", "reason": "x"},
    )
    assert r.status_code == 422
    assert not KillSwitch.objects.exists() and Tenant.objects.get().mode == "live"
