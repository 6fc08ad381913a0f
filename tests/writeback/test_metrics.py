"""Prometheus metrics: counters equal the ledger after a scenario, a scrape at a large ledger costs a
bounded number of queries, promtool finds nothing to say about a scrape or the shipped alert rules, and a
scrape shows only the caller's tenants."""

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import api_client_for
from tests.writeback.helpers import event
from tests.writeback.sync.conftest import bulk_writes, drain, post
from writeback.models import (
    Approval,
    AuditAction,
    AuditEntry,
    BusinessEvent,
    Conflict,
    Write,
    WriteAttempt,
)
from writeback.services.approvals import write_approve
from writeback.states import CLAIMABLE, WriteState
from writeback.sync.worker import SyncWorker

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = ROOT / "docs" / "prometheus-alerts.yml"
RETRY_OUTCOMES = ("retryable", "ambiguous", "lost")


def _due(writes) -> None:
    Write.objects.filter(pk__in=[w.pk for w in writes]).update(next_attempt_at=timezone.now())


def scenario(api, sim, approver, settings, phi: dict[str, str] | None = None) -> dict[str, list[Write]]:
    """What a demo does: events in, a 5xx retried, a send whose answer was lost found by read, an
    approval, a duplicate event, a 412 conflict, a write that fails for good, everything drained.
    `phi` replaces the clinical free text and values (the logs test looks for them afterwards)."""
    phi = phi or {}
    out: dict[str, list[Write]] = {}
    settings.WRITEBACK_HTTP_READ_TIMEOUT = 0.5

    # One pass of the worker under each fault: its answer lost (then found by read), then a 5xx.
    sim.set_faults("timeout_after_commit=1,stall_seconds=1,seed=1")
    out["found"] = post(api, "note.signed", key="s-note", text=phi.get("text", "Patient seen"))
    SyncWorker(concurrency=4).run_once()
    sim.set_faults("error_5xx=1,seed=1")
    out["retried"] = post(api, "problem.confirmed", key="s-problem", note=phi.get("note", "at visit"))
    SyncWorker(concurrency=4).run_once()
    sim.clear_faults()
    _due(out["found"] + out["retried"])

    meds = [
        {
            "code": {"system": "RxNorm", "code": "197361", "display": "amlodipine 5 MG Oral Tablet"},
            "status": "active",
            "action": "continue",
            "dosage": phi.get("dosage", "5 mg by mouth once daily"),
        }
    ]
    out["approved"] = post(api, "medication.reconciled", key="s-med", medications=meds)
    write_approve(write=out["approved"][0], user=approver, rationale="reviewed with the patient")
    duplicate = api.post(
        "/api/v1/events",
        event("note.signed", key="s-note", text=phi.get("text", "Patient seen")),
        format="json",
    )
    assert duplicate.status_code == 200

    patient = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
    phone = [{"system": "phone", "value": phi.get("phone", "+1 555 0100"), "use": "mobile"}]
    out["conflict"] = post(
        api, "demographics.updated", key="s-demo", base_version=patient["meta"]["versionId"], telecom=phone
    )
    sim.edit("Patient", "pat-1001", {"telecom": [{"system": "phone", "value": "+15559999", "use": "home"}]})
    drain()

    answers = [{"link_id": "chief_complaint", "text": "Reason for visit", "value": phi.get("answer", "ache")}]
    out["failed"] = post(api, "intake.completed", key="s-intake", answers=answers)
    sim.set_faults("error_5xx=1,seed=1")
    for _ in range(out["failed"][0].max_attempts):
        _due(out["failed"])
        drain()
    sim.clear_faults()
    drain()
    return out


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.content
    samples = {}
    for family in text_string_to_metric_families(r.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def test_counters_equal_the_ledger_after_a_scenario(
    live, sim, api, app_user, clinician2, settings, django_capture_on_commit_callbacks
):
    scraper = api_client_for(app_user, live)
    before = scrape(scraper)
    # The test runs in a transaction: counters are incremented on commit, so run the callbacks.
    with django_capture_on_commit_callbacks(execute=True):
        out = scenario(api, sim, clinician2, settings)
    after = scrape(scraper)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, tenant=live.slug, **labels) - total(
            before, name, tenant=live.slug, **labels
        )

    decisive = WriteAttempt.objects.filter(write__tenant=live).exclude(outcome="step")
    by_outcome = Counter(decisive.values_list("outcome", flat=True))
    # The scenario met every outcome the acceptance names.
    assert {"committed", "retryable", "ambiguous", "found", "conflict"} <= set(by_outcome)
    for outcome, n in by_outcome.items():
        assert delta("writeback_write_outcomes_total", outcome=outcome) == n, outcome
    assert delta("writeback_write_outcomes_total") == decisive.count()
    assert delta("writeback_write_retries_total") == decisive.filter(outcome__in=RETRY_OUTCOMES).count() > 0
    assert (
        delta("writeback_write_conflicts_total") == Conflict.objects.filter(write__tenant=live).count() == 1
    )
    assert (
        delta("writeback_write_conflicts_total", resource_type="Patient", event_type="demographics.updated")
        == 1
    )
    assert delta("writeback_duplicates_suppressed_total") == by_outcome["found"] == 1
    assert delta("writeback_duplicates_suppressed_total", resource_type="DocumentReference") == 1

    stored = BusinessEvent.objects.filter(tenant=live).count()
    assert delta("writeback_events_received_total", result="stored") == stored == 5
    duplicates = AuditEntry.objects.filter(action=AuditAction.EVENT_DUPLICATE_SUPPRESSED, tenant=live.slug)
    assert delta("writeback_events_received_total", result="duplicate") == duplicates.count() == 1

    timed = WriteAttempt.objects.filter(write__tenant=live, latency_ms__isnull=False)
    assert delta("writeback_vendor_request_duration_seconds_count") == timed.count() > 0
    assert (
        delta("writeback_vendor_request_duration_seconds_count", method="POST")
        == timed.filter(method="POST").count()
    )
    assert (
        delta("writeback_approval_latency_seconds_count", decision="approved")
        == Approval.objects.filter(write__tenant=live).count()
        == 1
    )

    # Gauges read the ledger at scrape time.
    queued = Write.objects.filter(tenant=live, state__in=CLAIMABLE).count()
    assert after[("writeback_queue_depth", (("tenant", live.slug), ("vendor", "generic")))] == queued
    assert total(after, "writeback_open_writes", tenant=live.slug, state="conflict") == 1
    assert total(after, "writeback_open_writes", tenant=live.slug, state="failed_terminal") == 1
    assert total(after, "writeback_open_alerts", tenant=live.slug) >= 1
    assert Write.objects.get(pk=out["failed"][0].pk).state == WriteState.FAILED_TERMINAL


def test_a_rolled_back_record_is_not_counted(live, sim, api, django_capture_on_commit_callbacks):
    """Counted on commit only: a transaction that fails after the attempt rows were saved counts nothing."""
    from django.db import transaction

    from writeback import metrics
    from writeback.services.record import save_attempts

    write = post(api, "problem.confirmed", key="rolled-back")[0]
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)
    labels = {"tenant": live.slug, "vendor": "generic", "resource_type": "Condition"}
    sample = "writeback_write_outcomes_total"
    from prometheus_client import REGISTRY

    def value() -> float:
        return (
            REGISTRY.get_sample_value(
                sample, {**labels, "event_type": "problem.confirmed", "outcome": "committed"}
            )
            or 0.0
        )

    start = value()
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        save_attempts(write, [WriteAttempt(write=write, number=1, outcome="committed")])
        raise RuntimeError("the transition failed")
    assert value() == start
    assert not WriteAttempt.objects.filter(write=write).exists()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        save_attempts(write, [WriteAttempt(write=write, number=1, outcome="committed")])
    assert value() == start + 1
    assert metrics.STEP == "step"


def test_a_refused_approval_is_not_timed_and_a_rejection_is(
    live, api, app_user, clinician, clinician2, django_capture_on_commit_callbacks
):
    """The four-eyes rule refuses the initiator: nothing is observed. The other clinician's rejection
    is observed once, as `rejected`."""
    from writeback.services.approvals import write_reject
    from writeback.services.permissions import ActionRefused

    scraper = api_client_for(app_user, live)
    before = scrape(scraper)
    write = post(api, "medication.reconciled", key="rejected-med")[0]
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ActionRefused):
            write_reject(write=write, user=clinician, rationale="my own")
        write_reject(write=write, user=clinician2, rationale="not this dose")
    after = scrape(scraper)
    name = "writeback_approval_latency_seconds_count"
    for decision, n in (("rejected", 1), ("approved", 0)):
        labels = {"tenant": live.slug, "decision": decision}
        assert total(after, name, **labels) - total(before, name, **labels) == n
    assert Approval.objects.filter(write=write).count() == 1


def test_a_scrape_at_a_large_ledger_runs_a_bounded_number_of_queries(
    live, app_user, django_assert_max_num_queries
):
    scraper = api_client_for(app_user, live)
    writes = bulk_writes(live, 2000)
    Write.objects.filter(pk__in=[w.pk for w in writes[:1500]]).update(state=WriteState.COMMITTED)
    Write.objects.filter(pk__in=[w.pk for w in writes[1500:1600]]).update(state=WriteState.FAILED_TERMINAL)
    # Authentication (token, user, roles) and the tenant scope, then three gauge queries.
    with django_assert_max_num_queries(12):
        samples = scrape(scraper)
    assert samples[("writeback_queue_depth", (("tenant", live.slug), ("vendor", "generic")))] == 400
    assert total(samples, "writeback_open_writes", tenant=live.slug, state="failed_terminal") == 100
    assert (
        samples[("writeback_oldest_pending_age_seconds", (("tenant", live.slug), ("vendor", "generic")))] >= 0
    )


def test_an_unauthenticated_scrape_gets_a_plain_401(client, tenant):
    r = client.get("/metrics")
    assert r.status_code == 401
    assert r["Content-Type"].startswith("text/plain")
    body = r.content.decode()
    assert body == "Authentication credentials were not provided.\n"
    bad = client.get("/metrics", HTTP_AUTHORIZATION="Token not-a-real-key")
    assert bad.status_code == 401 and "{" not in bad.content.decode() and "issue" not in bad.content.decode()


def test_a_scrape_shows_only_the_callers_tenants(
    live, sim, api, other_tenant, outsider, clinician2, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post(api, "problem.confirmed", key="scoped")
        drain()
    theirs = scrape(api_client_for(outsider, other_tenant))
    assert not [k for k in theirs if dict(k[1]).get("tenant") == live.slug]
    assert ("writeback_queue_depth", (("tenant", "other"), ("vendor", "generic"))) in theirs
    ours = scrape(api_client_for(clinician2, live))
    assert total(ours, "writeback_write_outcomes_total", tenant=live.slug, outcome="committed") >= 1


# -- promtool -----------------------------------------------------------------------------------------


def _promtool() -> str | None:
    path = shutil.which("promtool")
    if path is None and os.environ.get("CI_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is required (CI_REQUIRE_PROMTOOL=1): apt-get install prometheus")
    return path


def test_promtool_finds_nothing_in_a_scrape_after_a_demo_like_scenario(
    live, sim, api, app_user, clinician2, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        scenario(api, sim, clinician2, settings)
    text = api_client_for(app_user, live).get("/metrics").content.decode()
    # Every family parses, counters end in _total, histograms carry their buckets.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["writeback_write_outcomes"].type == "counter"
    assert families["writeback_vendor_request_duration_seconds"].type == "histogram"
    assert "writeback_vendor_latency_ms" not in text and 'quantile="' not in text
    promtool = _promtool()
    if promtool is not None:
        run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr


def test_the_shipped_alert_rules_pass_promtool():
    text = ALERT_RULES.read_text()
    for name in (
        'writeback_write_outcomes_total{outcome="conflict"}',
        'writeback_write_outcomes_total{outcome="retryable"}',
        "writeback_queue_depth",
        "writeback_oldest_pending_age_seconds",
        "writeback_oldest_outcome_unknown_age_seconds",
    ):
        assert name in text, name
    promtool = _promtool()
    if promtool is not None:
        run = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SUCCESS" in run.stdout
        # The rules fire on the series they are meant for, and stay quiet otherwise.
        unit = subprocess.run(
            [promtool, "test", "rules", str(Path(__file__).with_name("prometheus_alerts_test.yml"))],
            capture_output=True,
            text=True,
        )
        assert unit.returncode == 0, unit.stdout + unit.stderr


# -- several processes ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_worker_processes_counters_reach_the_web_scrape_in_multiprocess_mode(
    live, sim, api, app_user, tmp_path, monkeypatch
):
    """Two `run_sync_worker` processes write their samples to PROMETHEUS_MULTIPROC_DIR; the web
    process's /metrics serves their sum."""
    from tests.browser.worker import ENV, database_url

    for n in range(3):
        post(api, "problem.confirmed", key=f"mp-{n}", note=f"note {n}")
    env = {
        **os.environ,
        **ENV,
        "DATABASE_URL": database_url(),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for extra in (["--max-writes", "1"], ["--until-idle"]):
        run = subprocess.run(
            [sys.executable, "manage.py", "run_sync_worker", "--concurrency", "1", *extra],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    assert Write.objects.filter(tenant=live, state=WriteState.COMMITTED).count() == 3
    # One file per process (and kind of metric).
    assert len({p.name.rsplit("_", 1)[-1] for p in tmp_path.glob("counter_*.db")}) == 2

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    client = api_client_for(app_user, live)
    samples = scrape(client)
    promtool = _promtool()
    if promtool is not None:
        text = client.get("/metrics").content.decode()
        run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr
    assert total(samples, "writeback_write_outcomes_total", tenant=live.slug, outcome="committed") == 3
    posts = WriteAttempt.objects.filter(write__tenant=live, latency_ms__isnull=False).count()
    assert total(samples, "writeback_vendor_request_duration_seconds_count", tenant=live.slug) == posts
