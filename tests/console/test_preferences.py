"""The operator's time zone: any IANA zone, kept with the account, detected once from the browser, and
used for every time the console shows."""

from datetime import UTC, datetime

import pytest
from django.test import Client

from console.models import OperatorPreference
from tests.conftest import make_user
from tests.console.conftest import client_for, committed, refusals
from writeback.models import AuditEntry, Write

pytestmark = pytest.mark.django_db

URL = "/preferences/timezone"
DETECT = "/preferences/timezone/detect"
PASSWORD = "pw-for-tests-only"


def zone_of(user) -> str | None:
    return OperatorPreference.objects.filter(user=user).values_list("time_zone", flat=True).first()


def sign_in(username: str) -> Client:
    c = Client()
    r = c.post("/login/", {"username": username, "password": PASSWORD})
    assert r.status_code == 302, r.content
    return c


@pytest.mark.parametrize("persona", ["clinician", "admin_user", "engineer", "auditor"])
def test_every_console_role_sets_their_own_zone_and_it_outlives_the_session(request, persona):
    person = request.getfixturevalue(persona)
    c = sign_in(person.username)
    r = c.post(URL, {"tz": "Asia/Kathmandu", "next": "/writes/"})
    assert r.status_code == 302 and r.url == "/writes/"
    assert zone_of(person) == "Asia/Kathmandu"
    assert not OperatorPreference.objects.get(user=person).detected
    c.post("/logout/")
    again = sign_in(person.username)  # a new session: nothing carried over but the account
    assert "_auth_user_id" in again.session and "tz" not in again.session
    page = again.get(URL).content.decode()
    assert '<span class="tz-name">Asia/Kathmandu</span>' in page
    assert '<option value="Asia/Kathmandu" selected>' in page
    assert "data-tz-detect" not in page  # a zone is set: the browser is not asked


def test_times_on_a_page_are_in_the_chosen_zone(make, clinician):
    write = committed(make("note.signed"))
    at = datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
    Write.objects.filter(pk=write.pk).update(created_at=at)
    c = client_for(clinician)
    utc = c.get(f"/writes/{write.uid}/").content.decode()
    assert '2026-01-15 12:30:00 <span class="tz">UTC</span>' in utc
    c.post(URL, {"tz": "America/New_York"})
    page = c.get(f"/writes/{write.uid}/").content.decode()
    assert (
        '<time datetime="2026-01-15T12:30:00+00:00">2026-01-15 07:30:00 <span class="tz">EST</span></time>'
        in page
    )
    assert "12:30:00 <span" not in page  # only the machine-readable attribute keeps UTC
    c.post(URL, {"tz": "Asia/Tokyo"})
    listing = c.get("/writes/").content.decode()
    assert 'Jan 15, 21:30 <span class="tz visually-hidden">JST</span>' in listing


def test_an_unknown_zone_is_a_form_error_and_changes_nothing(clinician):
    c = client_for(clinician)
    c.post(URL, {"tz": "Europe/Paris"})
    r = c.post(URL, {"tz": "Mars/Olympus", "next": "/writes/"})
    assert r.status_code == 400
    body = r.content.decode()
    assert "“Mars/Olympus” is not a time zone we know." in body
    assert 'id="id_tz_error"' in body and 'aria-invalid="true"' in body
    assert zone_of(clinician) == "Europe/Paris"
    r = c.post(URL, {"tz": ""})
    assert r.status_code == 400 and "This field is required." in r.content.decode()
    assert zone_of(clinician) == "Europe/Paris"


def test_any_iana_zone_is_accepted_not_only_a_short_list(clinician):
    c = client_for(clinician)
    for zone in ("America/Argentina/Ushuaia", "Pacific/Chatham", "Asia/Calcutta"):  # the last: an alias
        assert c.post(URL, {"tz": zone}).status_code == 302
        assert zone_of(clinician) == zone
    page = c.get(URL).content.decode()
    assert '<option value="Asia/Calcutta" selected>' in page  # an alias is offered as it is set
    assert page.count("<option") > 300
    assert '<optgroup label="Europe">' in page


def test_the_zone_form_is_keyboard_friendly(clinician):
    page = client_for(clinician).get(URL).content.decode()
    assert "data-autosubmit" not in page  # arrow keys move through the list; nothing submits on change
    assert '<button type="submit" class="btn btn-primary">Save time zone</button>' in page
    assert '<label for="id_tz">Time zone' in page
    assert 'aria-describedby="id_tz_helptext"' in page and 'id="id_tz_helptext"' in page


def test_a_foreign_next_address_is_not_followed(clinician):
    r = client_for(clinician).post(URL, {"tz": "Europe/Oslo", "next": "https://evil.example/"})
    assert r.status_code == 302 and r.url == "/"
    assert zone_of(clinician) == "Europe/Oslo"


def test_a_zone_choice_is_not_audited(clinician):
    before = AuditEntry.objects.count()
    client_for(clinician).post(URL, {"tz": "Europe/Oslo"})
    client_for(clinician).post(DETECT, {"tz": "Europe/Rome"})
    assert AuditEntry.objects.count() == before


def test_a_person_without_a_role_cannot_use_it(tenant):
    nobody = make_user("no.role")
    c = client_for(nobody)
    assert c.get(URL).status_code == 403
    assert c.post(URL, {"tz": "Europe/Paris"}).status_code == 403
    assert c.post(DETECT, {"tz": "Europe/Paris"}).status_code == 403
    assert not OperatorPreference.objects.exists()
    assert len(refusals(channel="console", rule="role-required", action="use_console")) == 3
    page = c.get("/").content.decode()
    assert "data-tz-detect" not in page  # nobody asks the browser on a refusal page


def test_anonymous_people_are_sent_to_sign_in(client, tenant):
    for r in (client.get(URL), client.post(URL, {"tz": "UTC"}), client.post(DETECT, {"tz": "UTC"})):
        assert r.status_code == 302 and r.url.startswith("/login/")
    assert not OperatorPreference.objects.exists()


def test_the_browser_zone_is_taken_on_the_first_visit_only(clinician):
    c = client_for(clinician)
    page = c.get("/").content.decode()
    assert 'data-tz-detect="/preferences/timezone/detect"' in page
    assert '<span class="tz-name">UTC</span>' in page  # the default until one is known
    assert c.post(DETECT, {"tz": "America/Chicago"}).status_code == 204
    pref = OperatorPreference.objects.get(user=clinician)
    assert (pref.time_zone, pref.detected) == ("America/Chicago", True)
    page = c.get("/").content.decode()
    assert "data-tz-detect" not in page and '<span class="tz-name">America/Chicago</span>' in page
    assert "(detected from your browser)" in c.get(URL).content.decode()
    # Another browser later reports another zone: the stored one stays.
    assert c.post(DETECT, {"tz": "Asia/Tokyo"}).status_code == 204
    assert zone_of(clinician) == "America/Chicago"
    # The person's own choice replaces a detected zone, and detection never overrides it.
    c.post(URL, {"tz": "Europe/Lisbon"})
    c.post(DETECT, {"tz": "America/Chicago"})
    pref.refresh_from_db()
    assert (pref.time_zone, pref.detected) == ("Europe/Lisbon", False)


def test_a_bad_detected_zone_is_ignored(clinician):
    c = client_for(clinician)
    for value in ("Etc/Unknown", "", "<script>"):
        assert c.post(DETECT, {"tz": value}).status_code == 400
    assert c.get(DETECT).status_code == 405
    assert not OperatorPreference.objects.exists()
