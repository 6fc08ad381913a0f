"""A write whose outcome is unknown is looked up on the target before it is ever sent again."""

from datetime import timedelta

import pytest
from django.utils import timezone

from adapters.base import TargetConfig
from adapters.registry import get_adapter
from tests.writeback.sync.conftest import drain, ours, post
from writeback.models import Write, WriteAttempt
from writeback.services.requests import build_request
from writeback.states import WriteState
from writeback.sync.claim import claim_due


def _due(write):
    Write.objects.filter(pk=write.pk).update(next_attempt_at=timezone.now())


def test_timeout_after_commit_is_settled_by_read_not_by_resend(live, sim, api, settings):
    settings.WRITEBACK_HTTP_READ_TIMEOUT = 0.3
    sim.set_faults({"timeout_after_commit": 1, "stall_seconds": 1.5, "seed": 3})
    writes = post(api, "problem.confirmed")
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.OUTCOME_UNKNOWN  # visible state of its own
    assert w.last_outcome == "ambiguous"
    assert ours(sim) == {str(w.uid): 1}  # it did land
    sim.clear_faults()
    _due(w)
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED and w.target_resource_id
    outcomes = list(WriteAttempt.objects.filter(write=w).order_by("id").values_list("method", "outcome"))
    assert ("GET", "found") in outcomes
    assert [m for m, _ in outcomes].count("POST") == 1  # never sent twice
    assert ours(sim) == {str(w.uid): 1}


def test_dropped_connection_is_checked_then_sent_once(live, sim, api):
    sim.set_faults("drop_connection=1,seed=4")
    writes = post(api, "problem.confirmed")
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.OUTCOME_UNKNOWN
    assert ours(sim) == {}
    sim.clear_faults()
    _due(w)
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED
    outcomes = list(WriteAttempt.objects.filter(write=w).order_by("id").values_list("outcome", flat=True))
    # Looked up, not found, sent once; the answer to that send is the read-back (no GET step after it).
    assert outcomes[-2:] == ["not_found", "committed"]
    assert ours(sim) == {str(w.uid): 1}


def test_a_killed_workers_write_is_reclaimed_after_its_lease_and_checked_first(live, sim, api):
    writes = post(api, "problem.confirmed")
    dead = claim_due("worker:dead", 10)
    assert [d.pk for d in dead] == [writes[0].pk]
    # The dead worker did send before it was killed: the resource is on the target.
    target = TargetConfig(
        slug="t", vendor="generic", base_url=sim.fhir_base, identifier_system="urn:fhir-writeback:write-id"
    )
    adapter = get_adapter(target)
    w = Write.objects.select_related("event", "tenant").get(pk=writes[0].pk)
    assert adapter.write(build_request(w)).outcome == "committed"
    adapter.close()
    # While the lease lives, nobody else may take it.
    assert claim_due("worker:alive", 10) == []
    Write.objects.filter(pk=w.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED
    assert WriteAttempt.objects.filter(write=w, outcome="found").exists()
    assert ours(sim) == {str(w.uid): 1}


def test_a_killed_workers_unsent_write_is_sent_after_the_check(live, sim, api):
    writes = post(api, "problem.confirmed")
    claim_due("worker:dead", 10)
    Write.objects.filter(pk=writes[0].pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.COMMITTED
    lost = WriteAttempt.objects.get(write=w, outcome="not_found")
    assert "lease" in lost.error
    assert ours(sim) == {str(w.uid): 1}


def test_an_update_with_unknown_outcome_is_settled_by_reading_the_target(
    live, sim, api, settings, monkeypatch
):
    from adapters.generic.adapter import GenericFhirAdapter

    settings.WRITEBACK_HTTP_READ_TIMEOUT = 0.3
    real_write = GenericFhirAdapter.write

    def write_into_a_stall(self, req):
        # The prepare read goes through; the update itself lands and then times out.
        sim.set_faults({"timeout_after_commit": 1, "stall_seconds": 1.5, "seed": 5})
        return real_write(self, req)

    monkeypatch.setattr(GenericFhirAdapter, "write", write_into_a_stall)
    current = [p for p in sim.resources("Patient") if p["id"] == "pat-1001"][0]
    writes = post(api, "demographics.updated", base_version=current["meta"]["versionId"])
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.OUTCOME_UNKNOWN
    assert w.context["pre_image"]["telecom"] == current["telecom"]  # what a rollback would restore
    sim.clear_faults()
    monkeypatch.setattr(GenericFhirAdapter, "write", real_write)
    _due(w)
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED
    stored = [p for p in sim.resources("Patient") if p["id"] == "pat-1001"][0]
    assert stored["meta"]["versionId"] == str(int(current["meta"]["versionId"]) + 1)  # applied exactly once
    assert stored["telecom"][0]["value"] == "+15550100"


def test_a_write_that_landed_is_committed_even_if_its_approval_lapsed(live, sim, api, settings, clinician2):
    from writeback.models import Approval
    from writeback.services.approvals import write_approve

    settings.WRITEBACK_HTTP_READ_TIMEOUT = 0.3
    allergy = post(api, "allergy.recorded")[0]
    write_approve(write=allergy, user=clinician2, rationale="confirmed with the patient")
    sim.set_faults({"timeout_after_commit": 1, "stall_seconds": 1.5, "seed": 6})
    drain()
    sim.clear_faults()
    allergy.refresh_from_db()
    assert allergy.state == WriteState.OUTCOME_UNKNOWN
    Approval.objects.filter(write=allergy).update(expires_at=timezone.now() - timedelta(seconds=1))
    _due(allergy)
    drain()
    allergy.refresh_from_db()
    assert allergy.state == WriteState.COMMITTED  # found by read: the approval covered the send
    assert ours(sim) == {str(allergy.uid): 1}


def test_an_unknown_outcome_not_found_with_a_lapsed_approval_goes_back_to_a_clinician(
    live, sim, api, clinician2
):
    from writeback.models import Approval
    from writeback.services.approvals import write_approve

    allergy = post(api, "allergy.recorded")[0]
    write_approve(write=allergy, user=clinician2, rationale="confirmed with the patient")
    Write.objects.filter(pk=allergy.pk).update(state=WriteState.OUTCOME_UNKNOWN)  # it never landed
    Approval.objects.filter(write=allergy).update(expires_at=timezone.now() - timedelta(seconds=1))
    drain()
    allergy.refresh_from_db()
    assert allergy.state == WriteState.AWAITING_APPROVAL
    assert WriteAttempt.objects.filter(write=allergy, outcome="not_found").exists()
    assert ours(sim) == {}


def _transitions(write) -> list[tuple[str, str]]:
    from writeback.models import AuditEntry

    entries = AuditEntry.objects.filter(write_uid=str(write.uid), action="write.transition").order_by("seq")
    return [(e.data["from"], e.data["to"]) for e in entries]


def test_a_takeover_shows_the_unknown_outcome_in_the_ledger_before_settling_it(live, sim, api):
    writes = post(api, "problem.confirmed")
    claim_due("worker:dead", 10)
    Write.objects.filter(pk=writes[0].pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.COMMITTED
    assert ("pending", "outcome_unknown") in _transitions(w)
    assert _transitions(w)[-1] == ("outcome_unknown", "committed")
    lost = WriteAttempt.objects.get(write=w, outcome=WriteAttempt.Outcome.LOST)
    assert lost.worker_id == "worker:dead" and "lost its lease" in lost.error
    assert ours(sim) == {str(w.uid): 1}


@pytest.mark.django_db(transaction=True)
def test_the_worker_marks_a_dead_workers_write_outcome_unknown_even_while_it_is_held(live, sim, api):
    """Nobody can take the write over while its tenant is paused; the ledger must still say that its
    last try may have landed, not show it as plainly pending."""
    from writeback.models import TenantMode
    from writeback.sync.worker import SyncWorker

    writes = post(api, "problem.confirmed")
    claim_due("worker:dead", 10)
    Write.objects.filter(pk=writes[0].pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    live.mode = TenantMode.PAUSED
    live.save()

    SyncWorker(concurrency=2, until_idle=True, idle_sleep=0.01).run()

    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.OUTCOME_UNKNOWN
    assert w.last_outcome == WriteAttempt.Outcome.LOST and not w.lease_owner
    assert WriteAttempt.objects.filter(write=w, outcome="lost", worker_id="worker:dead").count() == 1
    assert ours(sim) == {}
    assert not [r for r in sim.requests(100) if r["method"] == "POST"]


def test_an_unknown_outcome_past_its_attempt_cap_is_not_sent_again(live, sim, api):
    """Timeouts on every try must not loop forever: once the attempts are used up and the check by read
    finds nothing, the write fails terminally, with an alert, and nothing more is sent."""
    from writeback.models import Alert

    writes = post(api, "problem.confirmed")
    w = writes[0]
    Write.objects.filter(pk=w.pk).update(
        state=WriteState.OUTCOME_UNKNOWN, attempts=w.max_attempts, last_outcome="ambiguous"
    )
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.FAILED_TERMINAL
    assert w.last_error.startswith("retries-exhausted")
    assert Alert.objects.filter(write=w, code="retries-exhausted").count() == 1
    assert [r["method"] for r in sim.requests(100) if r["method"] == "POST"] == []
    assert WriteAttempt.objects.filter(write=w, outcome="not_found").exists()


def test_an_unknown_outcome_under_its_cap_is_checked_then_sent(live, sim, api):
    writes = post(api, "problem.confirmed")
    w = writes[0]
    Write.objects.filter(pk=w.pk).update(
        state=WriteState.OUTCOME_UNKNOWN, attempts=w.max_attempts - 1, last_outcome="ambiguous"
    )
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED
    assert ours(sim) == {str(w.uid): 1}


def test_an_unknown_outcome_whose_checks_keep_failing_stays_unknown_and_raises_one_alert(
    live, sim, api, settings
):
    """A target that answers 5xx to everything: the check by read cannot settle the write. It stays
    outcome unknown (the truth: a resend could duplicate it), each check further apart, and once as
    many checks failed as it may have attempts, an alert asks a person to look."""
    from writeback.models import Alert

    settings.WRITEBACK_BACKOFF_BASE_SECONDS = 1  # delays of seconds: their order is not noise
    w = post(api, "problem.confirmed")[0]
    Write.objects.filter(pk=w.pk).update(
        state=WriteState.OUTCOME_UNKNOWN, attempts=1, last_outcome="ambiguous", max_attempts=3
    )
    sim.set_faults("error_5xx=1,seed=2")
    delays = []
    for _ in range(4):
        _due(w)
        drain()
        w.refresh_from_db()
        delays.append((w.next_attempt_at - timezone.now()).total_seconds())
    assert w.state == WriteState.OUTCOME_UNKNOWN and w.attempts == 1
    assert w.context["failed_checks"] == 4
    assert delays == sorted(delays)  # backing off
    assert Alert.objects.filter(write=w, code="outcome-unknown").count() == 1
    assert not [r for r in sim.requests(100) if r["method"] == "POST"]  # never sent blind
    sim.clear_faults()
    _due(w)
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED
    assert ours(sim) == {str(w.uid): 1}
