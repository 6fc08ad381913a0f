"""A test replay beside its original: the comparison page, the write page's links, the shadow page's
"Test replays" part; only for people who may see both tenants (anyone else: 404, no rows)."""

import uuid

import pytest
from django.utils import timezone

from tests.conftest import granted_user, make_user
from tests.console.conftest import RECORDER, client_for, exchange
from tests.console.test_queries import count_queries, ledger
from writeback import diffs
from writeback.models import Write
from writeback.replay_comparison import replay_comparison_get, sandbox_replay_summary
from writeback.services.approvals import write_approve
from writeback.services.policy import override_request
from writeback.services.record import Readback
from writeback.services.sandbox import replay_into_test
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.states import WriteState

OLD_TITLE = "Progress note (as mapped back then)"


@pytest.fixture
def sandbox(db):
    return tenant_create(slug="sandbox", vendor="generic", base_url="http://127.0.0.1:9/fhir", is_test=True)


@pytest.fixture
def both_admin(admin_user, sandbox):
    tenant_grant(tenant=sandbox, user=admin_user)
    return admin_user


def _replay(write: Write, sandbox, user) -> Write:
    [copy] = replay_into_test(event=write.event, write=write, target=sandbox, user=user, reason="compare")
    return Write.objects.select_related("tenant", "event").get(pk=copy.pk)


@pytest.fixture
def pair(make, both_admin, sandbox):
    """A note and its copy in the test tenant; the original was mapped with another description."""
    original = make("note.signed")
    copy = _replay(original, sandbox, both_admin)
    payload = {**original.payload, "description": OLD_TITLE}
    Write.objects.filter(pk=original.pk).update(payload=payload)
    original.refresh_from_db()
    return original, copy


def _page(user, write: Write):
    return client_for(user).get(f"/writes/{write.uid}/test-replays/")


# -- the pure diffs -----------------------------------------------------------------------------------

A_IDS = {"w-a": "(this write)", "e-a": "(this event)"}
B_IDS = {"w-b": "(this write)", "e-b": "(this event)"}


def test_the_sent_diff_reads_each_sides_own_ids_as_the_same_and_reports_the_rest():
    original = {
        "resourceType": "Condition",
        "id": "x1",  # server-managed: never compared
        "identifier": [{"system": "urn:w", "value": "w-a"}],
        "entity": {"what": "urn:uuid:e-a"},
        "code": "A1",
        "note": "only the original",
    }
    copy = {
        "resourceType": "Condition",
        "id": "x2",
        "identifier": [{"system": "urn:w", "value": "w-b"}],
        "entity": {"what": "urn:uuid:e-b"},
        "code": "B2",
        "onset": "2026",
    }
    compared, rows = diffs.replay_sent_diff(original, copy, A_IDS, B_IDS)
    assert compared == 7
    assert rows == [
        {"path": "code", "original": "A1", "copy": "B2", "kind": "changed"},
        {"path": "note", "original": "only the original", "copy": None, "kind": "dropped"},
        {"path": "onset", "original": None, "copy": "2026", "kind": "added"},
    ]
    # Another side's id is a difference: only each side's own ids are masked.
    _, rows = diffs.replay_sent_diff({"ref": "w-a"}, {"ref": "w-a"}, A_IDS, B_IDS)
    assert rows == [{"path": "ref", "original": "w-a", "copy": "w-a", "kind": "changed"}]


def test_the_stored_diff_compares_what_the_two_targets_hold():
    sent = {"status": "final", "code": "A1", "value": 5}
    a_readback = [{"path": "status", "sent": "final", "stored": "amended", "kind": "changed"}]
    b_readback = [
        {"path": "status", "sent": "final", "stored": "amended", "kind": "changed"},
        {"path": "value", "sent": 5, "stored": None, "kind": "dropped"},
    ]
    rows = diffs.replay_stored_diff(sent, a_readback, sent, b_readback, A_IDS, B_IDS)
    assert [(r["path"], r["original_stored"], r["copy_stored"], r["differs"]) for r in rows] == [
        ("status", "amended", "amended", False),
        ("value", 5, None, True),
    ]
    assert rows[1]["original_kind"] == "as sent" and rows[1]["copy_kind"] == "dropped"
    assert diffs.replay_stored_diff(sent, [], sent, [], A_IDS, B_IDS) == []


# -- the comparison -----------------------------------------------------------------------------------


def test_the_comparison_sets_the_two_sides_and_the_differing_fields_side_by_side(pair, both_admin):
    original, copy = pair
    comparison = replay_comparison_get(both_admin, original.uid)
    [p] = comparison.pairs
    assert (p.original.write.pk, p.copy.write.pk) == (original.pk, copy.pk)
    assert p.original.write.tenant.slug == "generic-main" and p.copy.write.tenant.slug == "sandbox"
    # Only what the mapping made differently: the copy's own identifier is new by design.
    assert p.sent == [
        {"path": "description", "original": OLD_TITLE, "copy": copy.payload["description"], "kind": "changed"}
    ]
    assert p.compared > 5 and p.stored is None
    # The same comparison from the copy's side.
    assert [
        (x.original.write.pk, x.copy.write.pk) for x in replay_comparison_get(both_admin, copy.uid).pairs
    ] == [(original.pk, copy.pk)]
    body = _page(both_admin, original).content.decode()
    assert "generic-main → sandbox" in body and OLD_TITLE in body and copy.payload["description"] in body
    assert 'scope="row" class="mono">description</th>' in body
    assert 'class="mono">identifier[0].value' not in body
    assert _page(both_admin, copy).status_code == 200


def test_the_decision_of_each_side_is_shown(make, both_admin, sandbox, engineer, clinician2):
    tenant_grant(tenant=sandbox, user=engineer)
    tenant_grant(tenant=sandbox, user=clinician2)
    override_request(
        tenant=sandbox, user=engineer, resource_type="DocumentReference", approval_required=True, note="t"
    )
    original = make("note.signed")
    copy = _replay(original, sandbox, both_admin)
    assert copy.state == WriteState.AWAITING_APPROVAL
    # The event's initiator may not approve their own (four eyes): a second clinician does.
    write_approve(write=copy, user=clinician2, rationale="looks right")
    [p] = replay_comparison_get(both_admin, original.uid).pairs
    assert p.sent == [] and p.copy.decision.approver == clinician2 and p.original.decision is None
    body = _page(both_admin, original).content.decode()
    assert "approved by bob.clinician" in body and "tenant override v1" in body and "Not required" in body
    assert "sends the same" in body


def test_where_both_committed_what_each_target_stored(pair, both_admin):
    original, copy = pair
    for write, stored in ((original, "current"), (copy, "superseded")):
        diff = diffs.readback_diff(write.payload, {**write.payload, "status": stored})
        RECORDER.committed(
            write,
            exchanges=[exchange()],
            resource_id=f"doc-{write.pk}",
            version="1",
            guarantee="ledger",
            counted=True,
            readback=Readback([], diff),
        )
    [p] = replay_comparison_get(both_admin, original.uid).pairs
    assert p.stored == [
        {
            "path": "status",
            "original_sent": "current",
            "original_stored": "current",
            "original_kind": "as sent",
            "copy_sent": "current",
            "copy_stored": "superseded",
            "copy_kind": "changed",
            "differs": True,
        }
    ]
    body = _page(both_admin, copy).content.decode()
    assert "stored differently" in body and "superseded" in body


def test_a_write_with_no_test_replay_has_no_comparison(make, both_admin):
    write = make("note.signed")
    assert replay_comparison_get(both_admin, write.uid) is None
    assert _page(both_admin, write).status_code == 404
    assert client_for(both_admin).get(f"/writes/{uuid.uuid4()}/test-replays/").status_code == 404


def test_a_malformed_lineage_is_no_comparison_not_a_500(pair, both_admin):
    original, copy = pair
    Write.objects.filter(pk=copy.pk).update(context={"test_replay_of": {"write": "not-a-uuid"}})
    assert _page(both_admin, copy).status_code == 404
    assert client_for(both_admin).get("/shadow/").status_code == 200


def test_a_purged_side_is_said_to_have_nothing_left_to_compare(pair, both_admin):
    original, copy = pair
    Write.objects.filter(pk=original.pk).update(payload={"purged": True}, payload_purged_at=timezone.now())
    [p] = replay_comparison_get(both_admin, copy.uid).pairs
    assert p.purged and p.sent == [] and p.stored is None
    assert "nothing left to compare" in _page(both_admin, copy).content.decode()
    [t] = sandbox_replay_summary(both_admin, [original.tenant, copy.tenant], since=copy.created_at).tenants
    assert (t.copies, t.differing, t.purged, t.recent) == (1, 0, 1, [])


# -- the write page links to it -----------------------------------------------------------------------


def test_the_write_page_links_both_ways(pair, both_admin):
    original, copy = pair
    c = client_for(both_admin)
    assert f"/writes/{original.uid}/test-replays/" in c.get(f"/writes/{original.uid}/").content.decode()
    body = c.get(f"/writes/{copy.uid}/").content.decode()
    assert f"/writes/{copy.uid}/test-replays/" in body and "Compare with the original" in body


# -- access: both tenants, or nothing ------------------------------------------------------------------


def _shadow(user) -> str:
    return client_for(user).get("/shadow/").content.decode()


def test_only_those_who_may_see_both_tenants_see_a_comparison(pair, sandbox, engineer, outsider, db):
    original, copy = pair
    test_only_admin = granted_user(sandbox, "tina.testadmin", "admin")
    clinician_of_both = granted_user(original.tenant, "cara.clinician", "clinician")
    tenant_grant(tenant=sandbox, user=clinician_of_both)
    auditor_of_both = granted_user(original.tenant, "aud.both", "auditor")
    tenant_grant(tenant=sandbox, user=auditor_of_both)
    # engineer: of the live tenant only; outsider: admin of another tenant.
    for person in (test_only_admin, engineer, clinician_of_both, auditor_of_both, outsider):
        for write in (original, copy):
            assert replay_comparison_get(person, write.uid) is None
            r = _page(person, write)
            assert r.status_code == 404, person
            assert OLD_TITLE not in r.content.decode() and "Test replay comparison" not in r.content.decode()
        shadow = _shadow(person)
        assert "test-replays/" not in shadow and str(copy.uid)[:8] not in shadow
        assert str(original.uid)[:8] not in shadow and "1 differs" not in shadow


def test_an_admin_of_only_the_test_tenant_is_not_told_of_the_original(pair, sandbox):
    original, copy = pair
    test_only_admin = granted_user(sandbox, "tina.testadmin", "admin")
    body = client_for(test_only_admin).get(f"/writes/{copy.uid}/").content.decode()
    # The copy's own records say it came from another tenant (its event's source, its transitions); the
    # original write itself is neither named nor linked.
    assert "a write of another tenant" in body
    assert str(original.uid) not in body and str(original.uid)[:8] not in body
    assert "test-replays/" not in body
    report = sandbox_replay_summary(test_only_admin, [sandbox], since=original.created_at)
    assert [(t.slug, t.copies, t.recent) for t in report.tenants] == [("sandbox", 0, [])]


def test_a_superuser_sees_every_comparison(pair, db):
    original, _ = pair
    root = make_user("root")
    root.is_superuser = True
    root.save()
    assert _page(root, original).status_code == 200


# -- the shadow page's part ---------------------------------------------------------------------------


def test_the_shadow_page_counts_copies_that_differ_per_field(pair, make, both_admin, sandbox):
    original, copy = pair
    same = make("note.signed")
    same_copy = _replay(same, sandbox, both_admin)
    report = sandbox_replay_summary(both_admin, [original.tenant, sandbox], since=original.created_at)
    [t] = report.tenants
    assert (t.slug, t.copies, t.differing, t.fields) == (
        "sandbox",
        2,
        1,
        [("DocumentReference", "description", 1)],
    )
    assert [(r.copy_uid, r.original_uid, r.fields) for r in t.recent] == [
        (str(copy.uid), str(original.uid), ["description"]),
        (str(same_copy.uid), str(same.uid), []),
    ]
    body = _shadow(both_admin)
    assert "Test replays" in body and "2 copies: 1 differs from its original" in body
    assert f"/writes/{copy.uid}/test-replays/" in body and f"/writes/{same_copy.uid}/test-replays/" in body


def test_a_live_tenants_copies_are_never_counted(pair, both_admin, other_tenant):
    """Only test tenants hold copies; a row claiming lineage in a live tenant is not one."""
    original, copy = pair
    tenant_grant(tenant=other_tenant, user=both_admin)
    Write.objects.filter(pk=copy.pk).update(tenant=other_tenant)
    report = sandbox_replay_summary(both_admin, [original.tenant, other_tenant], since=original.created_at)
    assert report.tenants == []
    assert replay_comparison_get(both_admin, original.uid) is None


# -- bounded queries ----------------------------------------------------------------------------------


def _copies_of(writes: list[Write], sandbox) -> list[Write]:
    """Copies as replay_into_test stores them (lineage in context), every third sending another value."""
    return Write.objects.bulk_create(
        Write(
            event=w.event,
            tenant=sandbox,
            position=w.position,
            resource_type=w.resource_type,
            operation=w.operation,
            payload={**w.payload, "status": "preliminary"} if i % 3 == 0 else w.payload,
            payload_hash=w.payload_hash,
            state=WriteState.PENDING,
            risk=w.risk,
            patient_ref=w.patient_ref,
            stream_key=f"{sandbox.pk}:{w.stream_key}",
            correlation_id=w.correlation_id,
            context={
                "test_replay_of": {"event": str(w.event.uid), "tenant": "generic-main", "write": str(w.uid)}
            },
        )
        for i, w in enumerate(writes)
    )


def test_the_shadow_page_and_the_comparison_run_as_many_queries_at_either_size(
    tenant, sandbox, both_admin, clinician2
):
    c = client_for(both_admin)
    small = ledger(tenant, 30, initiator=clinician2)
    _copies_of(small, sandbox)
    first = small[0]
    pages = ["/shadow/", f"/writes/{first.uid}/test-replays/", f"/writes/{first.uid}/"]
    [count_queries(c, url) for url in pages]  # warm per-process caches
    before = [count_queries(c, url) for url in pages]
    large = ledger(tenant, 600, initiator=clinician2)
    _copies_of(large, sandbox)
    _copies_of([first] * 4, sandbox)  # the first original now has five copies
    after = [count_queries(c, url) for url in pages]
    assert after == before
    assert len(replay_comparison_get(both_admin, first.uid).pairs) == 5
    [t] = sandbox_replay_summary(both_admin, [tenant, sandbox], since=first.created_at).tenants
    assert (t.copies, t.differing) == (634, 10 + 200 + 2)
    assert t.fields == [("Observation", "status", 212)]
