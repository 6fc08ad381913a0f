"""Reconciling a version conflict field by field."""

import pytest

from tests.console.conftest import HTMX, audit_actions, client_for, conflicted, refusals
from writeback.models import Conflict, Write
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

BASE = {
    "resourceType": "Patient",
    "id": "pat-1001",
    "telecom": [{"system": "phone", "value": "+15550109", "use": "home"}],
    "address": [{"line": ["9 Elm St"], "city": "Springfield", "state": "IL", "postalCode": "62701"}],
}
THEIRS = {**BASE, "telecom": [{"system": "phone", "value": "+15559999", "use": "home"}]}


@pytest.fixture
def conflict(make) -> Conflict:
    write = make("demographics.updated")
    _, conflict = conflicted(write, theirs=THEIRS, base=BASE, theirs_version="4")
    return conflict


def rows(conflict):
    return {r["path"]: i for i, r in enumerate(conflict.diff)}


def test_the_page_shows_base_ours_and_theirs_per_field(conflict, clinician2):
    body = client_for(clinician2).get(f"/conflicts/{conflict.uid}/").content.decode()
    assert "changed on both sides" in body  # telecom
    assert "changed by us" in body  # address
    assert "phone +15559999 (home)" in body
    assert "If-Match v4" in body
    assert b"Reconcile" in client_for(clinician2).get("/conflicts/").content


def test_preview_shows_the_resulting_resource_without_writing(conflict, clinician2):
    i = rows(conflict)
    r = client_for(clinician2).post(
        f"/conflicts/{conflict.uid}/preview", {f"choice-{i['telecom']}": "theirs"}, **HTMX
    )
    assert r.status_code == 200
    assert b"+15559999" in r.content and b"1 Main St" in r.content
    assert Write.objects.count() == 1


def test_preview_asks_for_a_choice_where_both_sides_changed(conflict, clinician2):
    r = client_for(clinician2).post(f"/conflicts/{conflict.uid}/preview", {}, **HTMX)
    assert r.status_code == 422
    assert b"both sides changed this field" in r.content


def test_a_typed_value_must_be_json(conflict, clinician2):
    i = rows(conflict)
    r = client_for(clinician2).post(
        f"/conflicts/{conflict.uid}/resolve",
        {f"choice-{i['telecom']}": "value", f"value-{i['telecom']}": "not json"},
    )
    assert r.status_code == 422 and b"is not valid JSON" in r.content
    assert Conflict.objects.get(pk=conflict.pk).resolved_at is None


@pytest.mark.parametrize("persona", ["clinician2", "admin_user"])
def test_resolving_queues_a_new_write_with_if_match_on_theirs(request, conflict, persona):
    i = rows(conflict)
    edited = '[{"system": "phone", "value": "+15551234", "use": "mobile"}]'
    r = client_for(request.getfixturevalue(persona)).post(
        f"/conflicts/{conflict.uid}/resolve",
        {
            f"choice-{i['telecom']}": "value",
            f"value-{i['telecom']}": edited,
            f"choice-{i['address']}": "theirs",
        },
    )
    conflict.refresh_from_db()
    new = conflict.resolution_write
    assert r.status_code == 302 and r.url == f"/writes/{new.uid}/"
    assert new.base_version == "4"
    assert new.state == WriteState.PENDING
    assert new.payload["telecom"][0]["value"] == "+15551234"
    assert new.payload["address"] == THEIRS["address"]
    assert Write.objects.get(pk=conflict.write_id).state == WriteState.SUPERSEDED
    assert "conflict.resolved" in audit_actions(object_id=str(conflict.uid))


def test_resolving_with_htmx_redirects_the_browser(conflict, clinician2):
    i = rows(conflict)
    r = client_for(clinician2).post(
        f"/conflicts/{conflict.uid}/resolve", {f"choice-{i['telecom']}": "ours"}, **HTMX
    )
    assert r.status_code == 200 and r["HX-Redirect"].startswith("/writes/")


@pytest.mark.parametrize("persona", ["engineer", "auditor"])
def test_engineers_and_auditors_cannot_resolve(request, conflict, persona):
    i = rows(conflict)
    c = client_for(request.getfixturevalue(persona))
    page = c.get(f"/conflicts/{conflict.uid}/").content.decode()
    assert "Reconciling a conflict is for clinicians and admins." in page
    r = c.post(f"/conflicts/{conflict.uid}/resolve", {f"choice-{i['telecom']}": "ours"})
    assert r.status_code == 403
    assert Conflict.objects.get(pk=conflict.pk).resolved_at is None
    assert refusals(action="resolve_conflict")


def test_an_outsider_is_refused_the_conflict(conflict, outsider):
    assert client_for(outsider).get(f"/conflicts/{conflict.uid}/").status_code == 403
    assert client_for(outsider).post(f"/conflicts/{conflict.uid}/resolve", {}).status_code == 403
