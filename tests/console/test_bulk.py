"""Bulk replay by an admin: count and sample first, then rate-limited, abortable, each item audited."""

import re
from datetime import timedelta

import pytest

from tests.console.conftest import (
    HTMX,
    RECORDER,
    audit_actions,
    client_for,
    committed,
    exchange,
    failed,
    refusals,
)
from writeback.models import AuditEntry, BulkItem, BulkOperation, Write
from writeback.services.bulk import bulk_process
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


@pytest.fixture
def broken(make):
    return [failed(make("problem.confirmed", note=f"visit {i}")) for i in range(5)]


def start(client, writes, rate="2"):
    data = {"uid": [str(w.uid) for w in writes], "reason": "vendor outage over", "rate": rate}
    return client.post("/bulk/start", data)


def test_preview_shows_the_count_and_a_sample(broken, make, admin_user):
    ok = make("note.signed")
    data = {"uid": [str(w.uid) for w in broken] + [str(ok.uid), "not-a-uuid"]}
    r = client_for(admin_user).post("/bulk/preview", data)
    assert r.status_code == 200
    body = r.content.decode()
    assert "Start replaying 5 writes" in body
    assert "selected but not failed" in body
    for w in broken:
        assert str(w.uid) in body


def test_preview_from_the_list_filters(broken, admin_user):
    r = client_for(admin_user).post(
        "/bulk/preview", {"filter": "state=failed_terminal&resource_type=Condition"}
    )
    assert "Start replaying 5 writes" in r.content.decode()


def test_the_list_offers_bulk_replay_to_admins_only(broken, admin_user, engineer):
    assert b"Replay selected failed writes" in client_for(admin_user).get("/writes/").content
    assert b"Replay selected failed writes" not in client_for(engineer).get("/writes/").content


@pytest.mark.parametrize("persona", ["engineer", "clinician2", "auditor"])
def test_only_admins_run_bulk_replays(request, broken, persona):
    c = client_for(request.getfixturevalue(persona))
    assert c.post("/bulk/preview", {"uid": [str(broken[0].uid)]}).status_code == 403
    assert start(c, broken).status_code == 403
    assert not BulkOperation.objects.exists()
    assert refusals(channel="console")


def test_items_run_at_the_chosen_rate_and_each_is_audited(broken, admin_user):
    r = start(client_for(admin_user), broken, rate="2")
    op = BulkOperation.objects.get()
    assert r.status_code == 302 and r.url == f"/bulk/{op.uid}/"
    assert op.total == 5 and op.items.count() == 5
    assert bulk_process(op, now=op.started_at) == 1  # the first item at once
    assert bulk_process(op, now=op.started_at + timedelta(seconds=0.4)) == 0  # not before its time
    assert bulk_process(op, now=op.started_at + timedelta(seconds=1)) == 2  # 2 per second
    assert bulk_process(op, now=op.started_at + timedelta(seconds=60)) == 2
    op.refresh_from_db()
    assert op.status == BulkOperation.Status.DONE and op.succeeded == 5
    for w in broken:
        w.refresh_from_db()
        assert w.state == WriteState.PENDING
        assert "bulk.item_processed" in audit_actions(write_uid=str(w.uid))
    assert "bulk.finished" in audit_actions(object_id=str(op.uid))


def test_abort_skips_what_is_left(broken, admin_user):
    c = client_for(admin_user)
    start(c, broken)
    op = BulkOperation.objects.get()
    bulk_process(op, now=op.started_at)
    r = c.post(f"/bulk/{op.uid}/abort")
    assert r.status_code == 302
    op.refresh_from_db()
    assert op.status == BulkOperation.Status.ABORTED and op.aborted_by == admin_user
    assert op.succeeded == 1 and op.skipped == 4
    assert BulkItem.objects.filter(operation=op, status=BulkItem.Status.SKIPPED).count() == 4
    assert bulk_process(op, now=op.started_at + timedelta(minutes=5)) == 0
    assert sum(1 for w in broken if type(w).objects.get(pk=w.pk).state == WriteState.PENDING) == 1
    assert "bulk.aborted" in audit_actions(object_id=str(op.uid))


def test_an_item_that_cannot_be_replayed_fails_alone(broken, admin_user):
    from writeback.services.operations import write_resolve

    c = client_for(admin_user)
    start(c, broken)
    op = BulkOperation.objects.get()
    write_resolve(write=broken[2], user=admin_user, note="fixed by hand meanwhile")
    bulk_process(op, now=op.started_at + timedelta(minutes=1))
    op.refresh_from_db()
    assert (op.succeeded, op.failed) == (4, 1)
    item = BulkItem.objects.get(operation=op, write=broken[2])
    assert item.status == BulkItem.Status.FAILED and "cannot be resent" in item.error


def test_the_progress_page_polls_until_done(broken, admin_user):
    c = client_for(admin_user)
    start(c, broken)
    op = BulkOperation.objects.get()
    page = c.get(f"/bulk/{op.uid}/")
    assert page.status_code == 200 and b"0 of 5 processed" in page.content and b"Abort" in page.content
    assert c.get(f"/bulk/{op.uid}/", **HTMX).status_code == 200
    bulk_process(op, now=op.started_at + timedelta(minutes=1))
    r = c.get(f"/bulk/{op.uid}/", **HTMX)
    assert r.status_code == 286  # htmx: stop polling
    assert b"5 of 5 processed" in r.content


def test_bad_bulk_input_is_a_form_error(broken, admin_user):
    c = client_for(admin_user)
    r = start(c, broken, rate="1000")
    assert r.status_code == 422 and b"less than or equal to" in r.content
    r = c.post("/bulk/start", {"uid": [str(broken[0].uid)], "reason": "", "rate": "2"})
    assert r.status_code == 422
    assert not BulkOperation.objects.exists()


def test_an_outsider_cannot_see_the_operation(broken, admin_user, outsider):
    start(client_for(admin_user), broken)
    op = BulkOperation.objects.get()
    assert client_for(outsider).get(f"/bulk/{op.uid}/").status_code == 403
    assert client_for(outsider).post(f"/bulk/{op.uid}/abort").status_code == 403


# -- the safe bulk action: several failed-retryable writes ------------------------------------


def retrying(write: Write) -> Write:
    RECORDER.retry(write, exchanges=[exchange(status=503)], message="503 from the EHR", retry_after=None)
    return Write.objects.select_related("tenant", "event").get(pk=write.pk)


@pytest.fixture
def waiting(make):
    writes = [retrying(make("problem.confirmed", note=f"retry {i}")) for i in range(4)]
    assert {w.state for w in writes} == {WriteState.FAILED_RETRYABLE}
    return writes


def test_failed_retryable_writes_are_offered_for_bulk_replay(waiting, admin_user):
    body = client_for(admin_user).get("/writes/?state=failed_retryable").content.decode()
    for w in waiting:
        assert f'<input type="checkbox" name="uid" value="{w.uid}" form="bulk-form"' in body


def test_bulk_replay_of_failed_retryable_writes_end_to_end(waiting, make, admin_user):
    committed_one = committed(make("note.signed"))
    c = client_for(admin_user)
    # Preview: the count, what is left out, and a sample with each write's state and last error.
    r = c.post("/bulk/preview", {"uid": [str(w.uid) for w in waiting] + [str(committed_one.uid)]})
    assert r.status_code == 200
    body = r.content.decode()
    assert "Start replaying 4 writes" in body
    assert re.search(r'Left out</span><span class="kpi-value">1</span>', body)
    assert "Sample (4 of 4)" in body
    for w in waiting:
        assert f'href="/writes/{w.uid}/"' in body
    assert body.count("503 from the EHR") == 4 and body.count("state-failed_retryable") == 4
    # Run.
    r = c.post(
        "/bulk/start",
        {"uid": [str(w.uid) for w in waiting], "reason": "EHR back from maintenance", "rate": "5"},
    )
    op = BulkOperation.objects.get()
    assert r.status_code == 302 and r.url == f"/bulk/{op.uid}/"
    assert op.total == 4 and op.rate_per_second == 5.0
    assert set(op.items.values_list("write_id", flat=True)) == {w.pk for w in waiting}
    started = AuditEntry.objects.get(action="bulk.started", object_id=str(op.uid))
    assert sorted(started.data["writes"]) == sorted(str(w.uid) for w in waiting)
    assert bulk_process(op, now=op.started_at) == 1  # rate-limited: one now ...
    assert bulk_process(op, now=op.started_at + timedelta(minutes=1)) == 3  # ... the rest when due
    op.refresh_from_db()
    assert op.status == BulkOperation.Status.DONE and (op.succeeded, op.failed, op.skipped) == (4, 0, 0)
    # Each item: the write queued again as it was, and its own audit entries.
    for w in waiting:
        w.refresh_from_db()
        assert w.state == WriteState.PENDING and w.attempts == 0
        item = AuditEntry.objects.get(action="bulk.item_processed", write_uid=str(w.uid))
        assert item.object_id == str(op.uid) and item.data["outcome"] == "done"
        assert item.actor == admin_user.username and item.correlation_id == w.correlation_id
        assert "write.replayed" in audit_actions(write_uid=str(w.uid))
    committed_one.refresh_from_db()
    assert committed_one.state == WriteState.COMMITTED
    assert not AuditEntry.objects.filter(action="bulk.item_processed", write_uid=str(committed_one.uid))
    page = c.get(f"/bulk/{op.uid}/").content.decode()
    assert "4 of 4 processed" in page


def test_bulk_replay_from_the_filter_takes_retryable_and_terminal_writes(waiting, broken, admin_user):
    c = client_for(admin_user)
    only_retryable = c.post("/bulk/preview", {"filter": "state=failed_retryable"}).content.decode()
    assert "Start replaying 4 writes" in only_retryable
    both = c.post("/bulk/preview", {"filter": "state=failed_retryable&state=failed_terminal"})
    assert "Start replaying 9 writes" in both.content.decode()
    c.post(
        "/bulk/start",
        {"uid": [str(w.uid) for w in [*waiting, *broken]], "reason": "after the outage", "rate": "20"},
    )
    op = BulkOperation.objects.get()
    bulk_process(op, now=op.started_at + timedelta(minutes=1))
    op.refresh_from_db()
    assert op.succeeded == 9
    assert {w.state for w in Write.objects.filter(pk__in=[w.pk for w in [*waiting, *broken]])} == {
        WriteState.PENDING
    }
    assert AuditEntry.objects.filter(action="bulk.item_processed", object_id=str(op.uid)).count() == 9
