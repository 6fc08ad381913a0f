"""The worker sends due writes once, records every attempt, and reads back what the EHR stored."""

from datetime import timedelta

from django.utils import timezone

from tests.writeback.sync.conftest import drain, ours, post
from writeback.models import Alert, AuditEntry, Write, WriteAttempt
from writeback.services.audit import verify_chain
from writeback.states import WriteState


def test_vitals_are_committed_once_and_read_back(live, sim, api):
    writes = post(api, "vitals.recorded")
    drain()
    for w in writes:
        w.refresh_from_db()
        assert w.state == WriteState.COMMITTED
        assert w.target_resource_id and w.target_version == "1"
        assert w.guarantee == "conditional_create"
        assert w.readback_diff == [] and w.warnings == []
        assert w.lease_owner == "" and w.attempts == 1
    counts = ours(sim)
    assert sorted(counts) == sorted(str(w.uid) for w in writes) and set(counts.values()) == {1}
    stored = sim.resources("Observation", patient="pat-1001")
    assert {o["code"]["coding"][0]["code"] for o in stored} >= {"85354-9", "8867-4", "29463-7"}
    # Each send is one attempt row with the request id and latency; the read-back is the POST's answer
    # (the generic server answers with the stored resource), so there is no GET step.
    attempt = WriteAttempt.objects.filter(write=writes[0], method="POST").get()
    assert attempt.outcome == "committed" and attempt.response_status == 201
    assert attempt.request_id and attempt.latency_ms is not None
    assert "authorization" not in {k.lower() for k in attempt.request_headers}
    assert WriteAttempt.objects.filter(write=writes[0]).count() == 1
    readback = AuditEntry.objects.get(action="write.readback", write_uid=str(writes[0].uid))
    assert readback.data["source"] == "answer"
    assert verify_chain().ok


def test_every_http_call_carries_request_and_correlation_ids(live, sim, api):
    writes = post(api, "problem.confirmed")
    drain()
    seen = [r for r in sim.requests(50) if r["method"] == "POST"]
    assert seen, seen
    headers = {k.lower(): v for k, v in seen[-1]["headers"].items()}
    assert headers["x-correlation-id"] == writes[0].correlation_id
    assert headers["x-request-id"]
    assert headers["if-none-exist"] == f"identifier=urn:fhir-writeback:write-id|{writes[0].uid}"


def test_readback_difference_raises_a_warning(live, sim, api, monkeypatch):
    """The EHR accepted it but stored something else: accepted is not yet in the chart. (The answer
    carries no body here, so the read-back is a GET; tests/writeback/sync/test_readback_answer.py has
    the same difference found in the answer.)"""
    from writeback.sync import process

    sim.set_faults("write_answer=minimal")
    writes = post(api, "problem.confirmed")
    real = process.WriteProcessor._readback

    def coerce(self, write, adapter, resource_id, *args, **kwargs):
        sim.edit("Condition", resource_id, {"note": [{"text": "shortened by the EHR"}]})
        return real(self, write, adapter, resource_id, *args, **kwargs)

    monkeypatch.setattr(process.WriteProcessor, "_readback", coerce)
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.COMMITTED
    assert [d["path"] for d in w.readback_diff] == ["note[0].text"]
    assert w.readback_diff[0]["stored"] == "shortened by the EHR"
    assert "differently" in w.warnings[0]
    assert AuditEntry.objects.get(action="write.readback", write_uid=str(w.uid)).data["differences"] == 1


def test_5xx_is_retried_with_backoff_then_commits(live, sim, api, settings):
    settings.WRITEBACK_BACKOFF_BASE_SECONDS = 30
    sim.set_faults("error_5xx=1,seed=1")
    writes = post(api, "problem.confirmed")
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.FAILED_RETRYABLE and w.attempts == 1
    assert w.next_attempt_at > timezone.now() + timedelta(seconds=10)  # 30 s base, half of it jitter
    sim.clear_faults()
    Write.objects.filter(pk=w.pk).update(next_attempt_at=timezone.now())
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED and w.attempts == 2
    assert list(WriteAttempt.objects.filter(write=w, method="POST").values_list("outcome", flat=True)) == [
        "retryable",
        "committed",
    ]
    assert set(ours(sim).values()) == {1}


def test_retry_after_is_honoured(live, sim, api, settings):
    sim.set_faults("rate_limit=1,seed=1")
    writes = post(api, "problem.confirmed")
    before = timezone.now()
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.FAILED_RETRYABLE
    assert w.next_attempt_at >= before + timedelta(seconds=1)  # Retry-After: 1, our own backoff is 0.01 s
    assert WriteAttempt.objects.get(write=w, method="POST").response_status == 429


def test_attempts_are_capped_then_terminal_with_an_alert(live, sim, api):
    sim.set_faults("error_5xx=1,seed=1")
    writes = post(api, "problem.confirmed")
    w = writes[0]
    for _ in range(w.max_attempts + 1):
        Write.objects.filter(pk=w.pk).update(next_attempt_at=timezone.now())
        drain()
    w.refresh_from_db()
    assert w.state == WriteState.FAILED_TERMINAL and w.attempts == w.max_attempts
    alert = Alert.objects.get(write=w)
    assert alert.code == "retries-exhausted" and alert.severity == "warning"  # medium risk -> warning
    assert not alert.holds_queue
    assert ours(sim) == {}


def test_a_rejected_write_fails_terminal_with_the_outcome_text(live, sim, api):
    writes = post(api, "referral.status_changed", task_id="task-does-not-exist")
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.FAILED_TERMINAL
    assert "task-does-not-exist" in w.last_error or "not" in w.last_error.lower()
    assert Alert.objects.filter(write=w, severity="critical").exists()  # referral is high risk


def test_one_failing_payload_never_blocks_the_writes_behind_it(live, sim, api):
    bad = post(api, "referral.status_changed", key="bad", task_id="task-nope")
    good = post(api, "problem.confirmed", key="good")
    drain()
    assert Write.objects.get(pk=bad[0].pk).state == WriteState.FAILED_TERMINAL
    assert Write.objects.get(pk=good[0].pk).state == WriteState.COMMITTED


def test_every_request_for_a_write_carries_its_correlation_id(live, sim, api):
    """From the API request to the EHR: the send, the read-back and the prepare read of an update all
    name the write's correlation id, so one id finds everything on both sides."""
    version = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")["meta"]["versionId"]
    sim.set_faults("write_answer=minimal")  # no stored resource in the answers: every write is read back
    problem = post(api, "problem.confirmed")[0]
    demographics = post(api, "demographics.updated", base_version=version)[0]
    drain()
    requests = [r for r in sim.requests(200) if not r["path"].startswith(("/_sim", "/fhir/metadata"))]
    by_id: dict[str, list[str]] = {}
    for r in requests:
        headers = {k.lower(): v for k, v in r["headers"].items()}
        by_id.setdefault(headers.get("x-correlation-id", ""), []).append(r["method"])
    demographics.refresh_from_db()
    assert demographics.state == "committed"
    assert "" not in by_id, by_id  # nothing went out without one
    assert sorted(by_id[problem.correlation_id]) == ["GET", "POST"]  # the create and its read-back
    assert sorted(by_id[demographics.correlation_id]) == ["GET", "GET", "PATCH"]  # prepare, patch, read-back
