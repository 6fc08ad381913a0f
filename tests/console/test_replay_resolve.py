"""Replay in its three modes (and shadow), and resolving by hand."""

import json

import pytest

from tests.console.conftest import HTMX, audit_actions, client_for, committed, failed, refusals
from writeback.models import Write
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


@pytest.fixture
def broken(make):
    return failed(make("problem.confirmed"))


@pytest.mark.parametrize("persona", ["admin_user", "engineer"])
def test_resend_queues_the_same_write_again(request, broken, persona):
    c = client_for(request.getfixturevalue(persona))
    assert c.get(f"/writes/{broken.uid}/replay").status_code == 200
    r = c.post(f"/writes/{broken.uid}/replay/run", {"mode": "resend", "reason": "Vendor fixed the outage."})
    assert r.status_code == 302 and r.url == f"/writes/{broken.uid}/"
    broken.refresh_from_db()
    assert broken.state == WriteState.PENDING and broken.attempts == 0
    assert "write.replayed" in audit_actions(write_uid=str(broken.uid))


def test_edit_replays_an_edited_payload_as_a_new_linked_write(broken, engineer):
    payload = dict(broken.payload, note=[{"text": "confirmed at follow-up"}])
    r = client_for(engineer).post(
        f"/writes/{broken.uid}/replay/run",
        {"mode": "edit", "payload": json.dumps(payload), "reason": "Note added."},
    )
    new = Write.objects.get(replay_of=broken)
    assert r.url == f"/writes/{new.uid}/"
    assert new.payload["note"] == [{"text": "confirmed at follow-up"}]
    broken.refresh_from_db()
    assert broken.state == WriteState.SUPERSEDED


def test_rederive_and_shadow(broken, admin_user):
    c = client_for(admin_user)
    c.post(f"/writes/{broken.uid}/replay/run", {"mode": "rederive", "shadow": "on", "reason": "Compare."})
    shadow = Write.objects.get(replay_of=broken)
    assert shadow.context.get("shadow_only") is True
    broken.refresh_from_db()
    assert broken.state == WriteState.FAILED_TERMINAL  # a shadow replay never takes over


def test_a_committed_write_replays_only_into_shadow(make, engineer):
    write = committed(make("note.signed"))
    page = client_for(engineer).get(f"/writes/{write.uid}/replay").content.decode()
    assert "can only be replayed into <strong>shadow</strong>" in page
    r = client_for(engineer).post(
        f"/writes/{write.uid}/replay/run",
        {"mode": "resend", "reason": "x"},
        HTTP_REFERER=f"http://testserver/writes/{write.uid}/replay",
    )
    assert r.status_code == 302
    assert not Write.objects.filter(replay_of=write).exists()


def test_replay_form_errors(broken, engineer):
    c = client_for(engineer)
    r = c.post(f"/writes/{broken.uid}/replay/run", {"mode": "edit", "payload": "{not json", "reason": "x"})
    assert r.status_code == 422 and b"is not valid JSON" in r.content
    r = c.post(f"/writes/{broken.uid}/replay/run", {"mode": "edit", "payload": "", "reason": "x"})
    assert r.status_code == 422 and b"Edit mode needs the edited payload" in r.content
    r = c.post(f"/writes/{broken.uid}/replay/run", {"mode": "sideways", "reason": "x"})
    assert r.status_code == 422
    r = c.post(
        f"/writes/{broken.uid}/replay/run",
        {"mode": "edit", "payload": json.dumps({"resourceType": "Observation"}), "reason": "x"},
        HTTP_REFERER=f"http://testserver/writes/{broken.uid}/replay",
    )
    assert r.status_code == 302
    assert b"must be a Condition resource" in c.get(r.url).content
    broken.refresh_from_db()
    assert broken.state == WriteState.FAILED_TERMINAL


@pytest.mark.parametrize("persona", ["clinician2", "auditor"])
def test_clinicians_and_auditors_cannot_replay(request, broken, persona):
    c = client_for(request.getfixturevalue(persona))
    assert c.get(f"/writes/{broken.uid}/replay").status_code == 403
    assert c.post(f"/writes/{broken.uid}/replay/run", {"mode": "resend", "reason": "x"}).status_code == 403
    broken.refresh_from_db()
    assert broken.state == WriteState.FAILED_TERMINAL
    assert len(refusals(action="replay")) == 2


def test_an_admin_resolves_by_hand_with_a_note(broken, admin_user):
    r = client_for(admin_user).post(f"/writes/{broken.uid}/resolve", {"note": "Entered by hand in the EHR."})
    assert r.status_code == 302
    broken.refresh_from_db()
    assert broken.state == WriteState.RESOLVED


def test_resolving_with_htmx_answers_the_write_panel(broken, admin_user):
    r = client_for(admin_user).post(f"/writes/{broken.uid}/resolve", {"note": "Fixed."}, **HTMX)
    assert r.status_code == 200
    assert b'id="write-main"' in r.content and b"Resolved by hand" in r.content


def test_resolving_needs_a_note(broken, admin_user):
    r = client_for(admin_user).post(f"/writes/{broken.uid}/resolve", {"note": " "}, **HTMX)
    assert r.status_code == 422 and b"Say what was done" in r.content
    broken.refresh_from_db()
    assert broken.state == WriteState.FAILED_TERMINAL


@pytest.mark.parametrize("persona", ["engineer", "clinician2", "auditor"])
def test_only_admins_resolve(request, broken, persona):
    r = client_for(request.getfixturevalue(persona)).post(f"/writes/{broken.uid}/resolve", {"note": "x"})
    assert r.status_code == 403
    broken.refresh_from_db()
    assert broken.state == WriteState.FAILED_TERMINAL
    assert refusals(action="resolve", rule="role-required")


def test_the_failed_write_page_shows_the_operation_outcome(broken, admin_user):
    body = client_for(admin_user).get(f"/writes/{broken.uid}/").content.decode()
    assert "error: subject is required" in body
    assert "Attempt 1: POST → 422" in body
    assert broken.correlation_id in body


def test_an_engineer_replays_a_whole_event_from_the_console(make, engineer):
    """Six vitals writes, the last two failed: the event replay resends those two and leaves the four
    in the chart alone, and says so."""
    event_writes = make("vitals.recorded", all_writes=True)
    first = event_writes[0]
    for w in event_writes[:4]:
        committed(w)
    for w in event_writes[4:]:
        failed(w)
    c = client_for(engineer)
    r = c.post(
        f"/writes/{event_writes[4].uid}/replay/run",
        {"mode": "resend", "scope": "event", "reason": "Vendor outage over."},
    )
    assert r.status_code == 302 and r.url == f"/writes/?q={first.event.uid}"
    states = [Write.objects.get(pk=w.pk).state for w in event_writes]
    assert states == [WriteState.COMMITTED] * 4 + [WriteState.PENDING] * 2
    assert audit_actions().count("write.replayed") == 2
    page = c.get(r.url).content.decode()
    assert "2 replayed, 0 added, 4 left alone (in the chart already" in page


def test_an_edited_payload_cannot_replay_a_whole_event(broken, engineer):
    r = client_for(engineer).post(
        f"/writes/{broken.uid}/replay/run",
        {"mode": "edit", "scope": "event", "payload": json.dumps(broken.payload), "reason": "x"},
    )
    assert r.status_code == 422
    assert "An edited payload replays one write" in r.content.decode()
    assert not Write.objects.filter(replay_of=broken).exists()
    assert Write.objects.get(pk=broken.pk).state == WriteState.FAILED_TERMINAL
