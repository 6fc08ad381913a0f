"""Forms with errors stay usable with a screen reader: every id an input names in aria-describedby is on
the page (Django names `{id}_helptext` and `{id}_error`), ids are unique, and the invalid field says so."""

from html.parser import HTMLParser

import pytest

from tests.console.conftest import client_for, committed, failed
from writeback.models import BulkOperation, Compensation

pytestmark = pytest.mark.django_db


class Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.described: list[tuple[str, str]] = []  # (the element's id or tag, an id it refers to)
        self.invalid: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        for ref in (a.get("aria-describedby") or "").split():
            self.described.append((a.get("id") or tag, ref))
        if a.get("aria-invalid") == "true":
            self.invalid.append(a.get("id") or tag)


def check(html: str) -> Ids:
    page = Ids()
    page.feed(html)
    missing = [(el, ref) for el, ref in page.described if ref not in page.ids]
    assert not missing, f"aria-describedby names ids that are not on the page: {missing}"
    duplicates = sorted({i for i in page.ids if page.ids.count(i) > 1})
    assert not duplicates, f"duplicate ids: {duplicates}"
    return page


def test_an_unknown_time_zone(clinician):
    r = client_for(clinician).post("/preferences/timezone", {"tz": "Nowhere/Atlantis"})
    assert r.status_code == 400
    page = check(r.content.decode())
    assert ("id_tz", "id_tz_error") in page.described and ("id_tz", "id_tz_helptext") in page.described
    assert page.invalid == ["id_tz"]


def test_a_rollback_without_reason_or_confirmation(make, admin_user):
    note = committed(make("note.signed"))
    r = client_for(admin_user).post(f"/writes/{note.uid}/rollback/confirm", {"reason": ""})
    assert r.status_code == 422
    page = check(r.content.decode())
    assert {("id_reason", "id_reason_error"), ("id_confirm", "id_confirm_error")} <= set(page.described)
    assert set(page.invalid) == {"id_reason", "id_confirm"}
    assert not Compensation.objects.exists()


def test_an_edit_replay_without_a_payload(make, admin_user):
    write = failed(make("note.signed"))
    r = client_for(admin_user).post(f"/writes/{write.uid}/replay/run", {"mode": "edit", "reason": ""})
    assert r.status_code == 422
    body = r.content.decode()
    page = check(body)
    assert {("id_payload", "id_payload_error"), ("id_reason", "id_reason_error")} <= set(page.described)
    assert "Edit mode needs the edited payload." in body


def test_a_replay_with_an_unknown_mode_names_the_radio_group_error(make, admin_user):
    write = failed(make("note.signed"))
    r = client_for(admin_user).post(f"/writes/{write.uid}/replay/run", {"mode": "sideways", "reason": "x"})
    assert r.status_code == 422
    page = check(r.content.decode())
    assert ("fieldset", "id_mode_error") in page.described  # the radios' fieldset carries it


def test_a_bulk_replay_at_a_rate_too_high(make, admin_user):
    writes = [failed(make("problem.confirmed", note=f"visit {i}")) for i in range(2)]
    r = client_for(admin_user).post(
        "/bulk/start", {"uid": [str(w.uid) for w in writes], "reason": "outage over", "rate": "1000"}
    )
    assert r.status_code == 422
    page = check(r.content.decode())
    assert ("id_rate", "id_rate_error") in page.described
    assert not BulkOperation.objects.exists()


def test_a_correction_with_bad_json(make, clinician2):
    note = committed(make("note.signed"))
    r = client_for(clinician2).post(f"/writes/{note.uid}/correction", {"data": "{nope", "reason": ""})
    assert r.status_code == 422
    page = check(r.content.decode())
    assert {("id_data", "id_data_error"), ("id_reason", "id_reason_error")} <= set(page.described)
