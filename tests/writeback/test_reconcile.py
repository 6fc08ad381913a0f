"""Ledger <-> EHR reconciliation against the simulator over real sockets: one test per finding kind with
the console's actions and their audit entries (and who may not take them), the paged and bounded
sweep, and the restore procedure's verify-before-send."""

from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.console.conftest import client_for
from tests.writeback.sync.conftest import bulk_writes, drain, ours, post
from writeback.models import (
    Alert,
    AuditEntry,
    ManualTask,
    ReconciliationFinding,
    ReconciliationRun,
    Write,
    WriteAttempt,
)
from writeback.services.reconcile import reconcile_tenant
from writeback.services.requests import build_request
from writeback.services.targets import adapter_for
from writeback.states import WriteState

pytestmark = pytest.mark.django_db
SYSTEM = "urn:fhir-writeback:write-id"
Kind, FState = ReconciliationFinding.Kind, ReconciliationFinding.State


def committed_conditions(api, n: int) -> list[Write]:
    writes = [post(api, "problem.confirmed", key=f"recon-{i}", note=f"visit {i}")[0] for i in range(n)]
    drain()
    done = list(Write.objects.filter(pk__in=[w.pk for w in writes]).select_related("tenant", "event"))
    assert {w.state for w in done} == {WriteState.COMMITTED}
    return done


def actions(write: Write | None = None, **filters) -> list[str]:
    qs = AuditEntry.objects.filter(**filters)
    if write is not None:
        qs = qs.filter(write_uid=str(write.uid))
    return list(qs.order_by("seq").values_list("action", flat=True))


def decide(user, finding, action, note="checked in the EHR"):
    return client_for(user).post(f"/reconciliation/{finding.uid}/{action}", {"note": note})


# -- orphan ----------------------------------------------------------------------------------------------


def test_an_orphan_is_found_adopted_by_an_engineer_and_never_sent_again(live, sim, api, engineer, clinician2):
    (write,) = post(api, "problem.confirmed", key="orphan")
    # It landed, but the ledger never heard (a restore, a lost answer): it still says pending.
    adapter = adapter_for(live)
    assert adapter.write(build_request(write)).outcome == "committed"
    adapter.close()
    assert Write.objects.get(pk=write.pk).state == WriteState.PENDING

    run = reconcile_tenant(live, actor="test")
    (finding,) = ReconciliationFinding.objects.filter(run=run)
    assert (finding.kind, finding.write_id, finding.state) == (Kind.ORPHAN, write.pk, FState.OPEN)
    assert run.counts[Kind.ORPHAN] == 1
    alert = Alert.objects.get(tenant=live, code="reconciliation-findings")
    assert "1 orphan" in alert.message
    page = client_for(engineer).get("/reconciliation/")
    assert page.status_code == 200 and f"/reconciliation/{finding.uid}/adopt" in page.content.decode()

    # A clinician may not adopt (the role table gives it to admins and engineers): refused, audited.
    r = decide(clinician2, finding, "adopt")
    assert r.status_code == 403
    assert Write.objects.get(pk=write.pk).state == WriteState.PENDING
    assert AuditEntry.objects.filter(action="access.refused", actor=clinician2.username).exists()
    # The note is required: nothing happens without one.
    assert decide(engineer, finding, "adopt", note="").status_code == 302
    assert ReconciliationFinding.objects.get(pk=finding.pk).state == FState.OPEN

    r = decide(engineer, finding, "adopt")
    assert r.status_code == 302
    finding.refresh_from_db()
    write.refresh_from_db()
    assert finding.state == FState.ADOPTED and finding.decided_by == engineer
    assert write.state == WriteState.COMMITTED and write.target_resource_id == finding.resource_id
    found = WriteAttempt.objects.get(write=write, outcome=WriteAttempt.Outcome.FOUND)
    assert "reconciliation" in found.error
    entry = AuditEntry.objects.get(action="reconciliation.adopted")
    assert entry.actor == engineer.username and entry.write_uid == str(write.uid)
    # Adopting twice is refused; the worker has nothing to send; the chart holds it once.
    assert decide(engineer, finding, "adopt").status_code in (302, 409)
    assert ReconciliationFinding.objects.get(pk=finding.pk).decided_by == engineer
    drain()
    assert not WriteAttempt.objects.filter(write=write, method="POST").exists()
    assert ours(sim) == {str(write.uid): 1}
    # A second sweep sees nothing new.
    assert sum(reconcile_tenant(live).counts.get(k, 0) for k in Kind.values) == 0


def test_an_outsider_cannot_see_or_decide_another_tenants_finding(live, sim, api, outsider):
    (write,) = post(api, "problem.confirmed", key="orphan-2")
    adapter = adapter_for(live)
    adapter.write(build_request(write))
    adapter.close()
    reconcile_tenant(live)
    finding = ReconciliationFinding.objects.get()
    assert str(finding.uid) not in client_for(outsider).get("/reconciliation/").content.decode()
    assert decide(outsider, finding, "adopt").status_code == 403
    assert ReconciliationFinding.objects.get().state == FState.OPEN
    assert Write.objects.get(pk=write.pk).state == WriteState.PENDING


# -- missing ---------------------------------------------------------------------------------------------


def test_a_missing_write_is_found_and_resent_with_lineage(live, sim, api, admin_user, clinician2):
    gone, voided, kept = committed_conditions(api, 3)
    httpx.delete(f"{sim.fhir_base}/Condition/{gone.target_resource_id}").raise_for_status()
    sim.edit(
        "Condition",
        voided.target_resource_id,
        {"verificationStatus": {"coding": [{"code": "entered-in-error"}]}},
    )

    run = reconcile_tenant(live, actor="test")
    findings = {f.write_id: f for f in ReconciliationFinding.objects.filter(run=run)}
    assert {f.kind for f in findings.values()} == {Kind.MISSING}
    assert set(findings) == {gone.pk, voided.pk}  # the one still there is no finding
    assert findings[voided.pk].detail["reason"] == "entered-in-error at the EHR"
    assert Alert.objects.get(code="reconciliation-findings").severity == "critical"

    # Accepting is not resending: a clinician may not resend (admins and engineers do).
    assert decide(clinician2, findings[gone.pk], "resend").status_code == 403
    assert Write.objects.filter(replay_of=gone).count() == 0
    # An action the kind does not offer is refused, with nothing written.
    assert decide(admin_user, findings[gone.pk], "adopt").status_code == 409
    assert ReconciliationFinding.objects.get(pk=findings[gone.pk].pk).state == FState.OPEN

    assert decide(admin_user, findings[gone.pk], "resend").status_code == 302
    finding = ReconciliationFinding.objects.get(pk=findings[gone.pk].pk)
    replay = finding.resolution_write
    assert finding.state == FState.RESENT and replay.replay_of_id == gone.pk
    assert Write.objects.get(pk=gone.pk).state == WriteState.SUPERSEDED
    assert AuditEntry.objects.filter(action="reconciliation.resent", actor=admin_user.username).exists()
    assert "write.replayed" in actions(gone)
    drain()
    replay.refresh_from_db()
    assert replay.state == WriteState.COMMITTED
    assert ours(sim).get(str(replay.uid)) == 1  # a new chart entry, carrying the replay's own identifier
    assert str(kept.uid) in ours(sim)


def test_an_incomplete_sweep_never_concludes_missing(live, sim, api):
    committed_conditions(api, 2)
    sim.set_faults("error_5xx=1,seed=1")
    run = reconcile_tenant(live)
    sim.clear_faults()
    assert run.status == ReconciliationRun.Status.INCOMPLETE
    assert not ReconciliationFinding.objects.exists()


# -- drift -----------------------------------------------------------------------------------------------


def test_drift_is_found_accepted_by_a_clinician_or_sent_for_correction(live, sim, api, clinician2, engineer):
    accepted, corrected = committed_conditions(api, 2)
    for w in (accepted, corrected):
        sim.edit("Condition", w.target_resource_id, {"note": [{"text": "edited in the EHR"}]})

    run = reconcile_tenant(live)
    findings = {f.write_id: f for f in ReconciliationFinding.objects.filter(run=run)}
    assert {f.kind for f in findings.values()} == {Kind.DRIFT} and set(findings) == {
        accepted.pk,
        corrected.pk,
    }
    drift = findings[accepted.pk]
    assert drift.version != accepted.target_version
    assert any(d["path"].startswith("note") for d in drift.detail["diff"])
    page = client_for(clinician2).get("/reconciliation/?kind=drift").content.decode()
    assert "edited in the EHR" in page

    # Engineers neither accept drift (a clinical judgement) nor correct it.
    assert decide(engineer, drift, "accept").status_code == 403
    assert decide(engineer, findings[corrected.pk], "correct").status_code == 403
    assert ReconciliationFinding.objects.filter(state=FState.OPEN).count() == 2

    assert decide(clinician2, drift, "accept", note="the clinician's edit is right").status_code == 302
    assert decide(clinician2, findings[corrected.pk], "correct", note="restore our note").status_code == 302
    assert ReconciliationFinding.objects.get(pk=drift.pk).state == FState.ACCEPTED
    fixed = ReconciliationFinding.objects.get(pk=findings[corrected.pk].pk)
    assert fixed.state == FState.CORRECTED and fixed.task.role == "clinician"
    assert ManualTask.objects.filter(write=corrected, status="open").exists()
    for action in ("reconciliation.accepted", "reconciliation.correction_requested"):
        assert AuditEntry.objects.get(action=action).actor == clinician2.username
    # Nothing was written to the EHR by either decision; an accepted version is not found again.
    assert Write.objects.filter(tenant=live).count() == 2
    again = reconcile_tenant(live)
    assert again.counts[Kind.DRIFT] == 0 and not ReconciliationFinding.objects.filter(run=again).exists()
    # A later edit is a new version: found again.
    sim.edit("Condition", accepted.target_resource_id, {"note": [{"text": "edited once more"}]})
    assert reconcile_tenant(live).counts[Kind.DRIFT] == 1


# -- the sweep is paged and bounded ----------------------------------------------------------------------


def test_the_sweep_pages_with_count_and_next_links_and_batches_ledger_lookups(live, sim):
    writes = bulk_writes(live, 23)
    drain()
    assert Write.objects.filter(pk__in=[w.pk for w in writes], state=WriteState.COMMITTED).count() == 23
    before = len(sim.requests(5000))
    with CaptureQueriesContext(connection) as queries:
        run = reconcile_tenant(live, page_size=10)
    requests = sim.requests(5000)[before:]
    searches = [r for r in requests if r["path"].startswith("/fhir/Observation")]
    assert len(searches) == 3  # 10 + 10 + 3
    first = parse_qs(urlsplit(searches[0]["path"]).query)
    assert first["identifier"] == [f"{SYSTEM}|"] and first["_count"] == ["10"]
    assert "_offset" in searches[1]["path"]  # the server's next link was followed
    assert run.requests == len(requests) == len(run.resource_types) + 2
    assert run.resources_seen == 23 and run.status == ReconciliationRun.Status.DONE
    ledger = [q for q in queries.captured_queries if 'FROM "writeback_write"' in q["sql"]]
    assert len(ledger) <= 8, len(ledger)  # per page, not per resource (23 resources)
    assert not ReconciliationFinding.objects.exists()


def test_a_vendor_without_identifier_search_says_so(live, api):
    live.vendor = "epic"
    live.save()
    run = reconcile_tenant(live)
    assert run.status == ReconciliationRun.Status.UNSUPPORTED and run.requests == 0
    assert "search by identifier" in run.message


def test_reconcile_tenant_command_refuses_bad_input(live, capsys):
    from django.core.management.base import CommandError

    for args in (["nope"], [live.slug, "--since", "yesterday"], [live.slug, "--page-size", "0"]):
        with pytest.raises(CommandError):
            call_command("reconcile_tenant", *args)
    with pytest.raises(CommandError):
        call_command(
            "reconcile_tenant", live.slug, "--since", "2026-12-02T00:00Z", "--until", "2026-12-01T00:00Z"
        )
    assert not ReconciliationRun.objects.filter(status="running").exists()


# -- restore: verify before sending ----------------------------------------------------------------------


def test_recover_after_restore_marks_open_writes_and_the_worker_checks_by_read(live, sim, api):
    landed, fresh = (post(api, "problem.confirmed", key=f"restored-{i}")[0] for i in range(2))
    adapter = adapter_for(live)  # sent after the backup was taken; the restored ledger does not know
    adapter.write(build_request(landed))
    adapter.close()

    call_command("recover_after_restore", "--tenant", live.slug)
    assert set(Write.objects.filter(tenant=live).values_list("verify_before_send", flat=True)) == {True}
    run = ReconciliationRun.objects.get()
    assert run.counts["settling_by_read"] == 1 and not ReconciliationFinding.objects.exists()
    assert AuditEntry.objects.get(action="restore.recovery").data["marked_verify_before_send"] == 2

    drain()
    landed.refresh_from_db()
    fresh.refresh_from_db()
    assert landed.state == fresh.state == WriteState.COMMITTED
    assert not landed.verify_before_send and not fresh.verify_before_send
    found = WriteAttempt.objects.get(write=landed, outcome=WriteAttempt.Outcome.FOUND)
    assert found.method == "GET"
    assert not WriteAttempt.objects.filter(write=landed, method="POST").exists()
    assert WriteAttempt.objects.filter(write=fresh, outcome="not_found", error__contains="restored").exists()
    assert ours(sim) == {str(landed.uid): 1, str(fresh.uid): 1}


def test_a_restore_is_detected_on_worker_start_from_the_marker(live, sim, api, settings, tmp_path):
    from writeback.services import restore

    settings.WRITEBACK_GENERATION_FILE = str(tmp_path / "generation.json")
    (write,) = post(api, "problem.confirmed", key="detected")
    restore.write_marker()
    assert restore.check_for_restore() is None  # the same database: nothing to do
    marker = restore.read_marker()
    # The database goes back in time: the head the marker recorded is no longer there.
    (tmp_path / "generation.json").write_text(
        f'{{"seq": {marker["seq"] + 50}, "hash": "{"f" * 64}", "at": "later"}}'
    )
    acted = restore.check_for_restore(actor="worker:test")
    assert acted == {live.slug: 1}
    assert Write.objects.get(pk=write.pk).verify_before_send
    assert Alert.objects.filter(tenant=live, code="restore-detected", severity="critical").exists()
    assert AuditEntry.objects.filter(action="restore.detected").exists()
    assert restore.read_marker()["seq"] == restore.chain_head()[0]  # the new generation is recorded
    assert restore.check_for_restore() is None


def test_hostile_decisions_are_refused_without_a_change(live, sim, api, admin_user):
    (write,) = post(api, "problem.confirmed", key="hostile")
    adapter = adapter_for(live)
    adapter.write(build_request(write))
    adapter.close()
    reconcile_tenant(live)
    finding = ReconciliationFinding.objects.get()
    c = client_for(admin_user)
    assert c.post(f"/reconciliation/{finding.uid}/delete", {"note": "x"}).status_code == 400
    assert c.get(f"/reconciliation/{finding.uid}/adopt").status_code == 405  # POST only
    assert c.post(f"/reconciliation/{uuid4()}/adopt", {"note": "x"}).status_code == 404
    assert c.post(f"/reconciliation/{finding.uid}/adopt", {"note": "x" * 5000}).status_code == 302
    finding.refresh_from_db()
    assert finding.state == FState.OPEN and Write.objects.get(pk=write.pk).state == WriteState.PENDING
    assert not AuditEntry.objects.filter(
        action__startswith="reconciliation.", object_type="reconciliation_finding"
    )


def test_scheduled_sweeps_are_off_by_default_and_run_when_asked(live, sim):
    from writeback.services.reconcile import reconcile_due

    assert reconcile_due() == []
    live.settings = {**live.settings, "reconcile_every_minutes": 60}
    live.save()
    (run,) = reconcile_due()
    assert run.actor == "scheduler" and run.status == ReconciliationRun.Status.DONE
    assert reconcile_due() == []  # not due again for an hour


def test_an_orphan_a_worker_is_sending_now_is_not_adopted_under_it(live, sim, api, engineer):
    from writeback.errors import DomainError
    from writeback.services.reconcile import finding_decide
    from writeback.sync.claim import claim_due

    (write,) = post(api, "problem.confirmed", key="leased")
    adapter = adapter_for(live)
    adapter.write(build_request(write))
    adapter.close()
    reconcile_tenant(live)
    finding = ReconciliationFinding.objects.get()
    assert [w.pk for w in claim_due("worker:busy", 10)] == [write.pk]
    with pytest.raises(DomainError) as refused:
        finding_decide(finding=finding, user=engineer, action="adopt", note="seen in the EHR")
    assert refused.value.status == 409
    write.refresh_from_db()
    assert write.state == WriteState.PENDING and write.lease_owner == "worker:busy"
    assert ReconciliationFinding.objects.get().state == FState.OPEN


def test_recover_after_restore_refuses_bad_input_and_marks_nothing(live, api):
    from django.core.management.base import CommandError

    post(api, "problem.confirmed", key="bad-input")
    for args in (["--tenant", "nope"], ["--since", "after lunch"]):
        with pytest.raises(CommandError):
            call_command("recover_after_restore", *args)
    assert not Write.objects.filter(verify_before_send=True).exists()
    assert not AuditEntry.objects.filter(action="restore.recovery").exists()
