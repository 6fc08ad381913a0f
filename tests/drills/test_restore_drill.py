"""Restore drill: the database is restored from a backup taken mid-drain, while the EHR keeps every
write sent after the backup. The documented procedure (`recover_after_restore`, docs/recovery.md) must
leave no second chart entry and lose nothing, against a target that does not deduplicate creates.

Conditional create is off for the vitals (the tenant's capability registry refuses it), so no create
carries `If-None-Exist` and only the ledger and the check by read stand between a restored `pending`
write and a duplicate Observation."""

import glob
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from tests.drills.checks import IDENTIFIER_SYSTEM, check_drill
from tests.drills.conftest import PATIENT_NUMBERS, Drill, database_url, wait_for
from tests.writeback.canonical.examples import envelope
from writeback.models import (
    Alert,
    AuditEntry,
    Capability,
    ReconciliationFinding,
    ReconciliationRun,
    Tenant,
    Write,
    WriteAttempt,
)
from writeback.states import WriteState

pytestmark = [
    pytest.mark.drill,
    pytest.mark.xdist_group("drills"),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def pg_tool(name: str) -> str:
    """The client matching the server (pg_dump refuses a newer server), from PostgreSQL's bin folders."""
    major = connection.cursor().connection.info.server_version // 10000
    found = glob.glob(f"/usr/lib/postgresql/{major}/bin/{name}")
    if not found:
        pytest.fail(f"{name} for PostgreSQL {major} is not installed")
    return found[0]


def vitals(drill: Drill, count: int) -> list[dict]:
    """`count` vitals events of distinct patients, each with every measurement (6 Observations)."""
    versions = {p["id"]: p["meta"]["versionId"] for p in drill.sim.resources("Patient")}
    bodies = []
    for i, n in enumerate(list(PATIENT_NUMBERS)[:count]):
        body = drill._event("vitals.recorded", n, f"restore-{i:03d}", versions[f"pat-{n}"])
        body["data"]["measurements"] = envelope("vitals.recorded")["data"]["measurements"]
        bodies.append(body)
    return bodies


@pytest.mark.parametrize("procedure", ["recover_after_restore", "detected_by_the_worker"])
def test_restore_from_a_mid_drain_backup_then_recover_makes_no_duplicates(
    drill: Drill, tmp_path: Path, procedure: str
):
    """`recover_after_restore`: the documented step. `detected_by_the_worker`: the step is forgotten;
    the workers keep the restore marker (WRITEBACK_GENERATION_FILE) and the first to start on the
    restored database marks the writes itself."""
    marker = {"WRITEBACK_GENERATION_FILE": str(tmp_path / "generation.json")}
    env = marker if procedure == "detected_by_the_worker" else None
    Capability.objects.update_or_create(
        tenant=drill.tenant,
        resource_type="Observation",
        operation="conditional_create",
        source=Capability.Source.MANUAL,
        defaults={"allowed": False, "notes": "the drill's target ignores If-None-Exist"},
    )
    # The restore is about resources found by our identifier; an event's Provenance (PUT under its
    # write's uid, so a resend lands on the same resource) carries none and is left out here.
    Tenant.objects.filter(pk=drill.tenant.pk).update(write_provenance=False)
    drill.tenant.refresh_from_db()
    bodies = vitals(drill, 40)
    drill.post(bodies)
    total = Write.objects.filter(tenant=drill.tenant).count()
    assert total == drill.expected_writes(bodies) == 240

    # Drain slowly enough to take the backup after about a third has committed.
    drill.set_faults("slow_ms=100,seed=9")
    batch = drill.start(processes=2, concurrency=4, env=env)
    wait_for(lambda: drill.committed() >= total // 3, timeout=120, what="a third committed")
    backup_point = timezone.now() - timedelta(seconds=1)
    dump = tmp_path / "backup.dump"
    pg_env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    subprocess.run(
        [pg_tool("pg_dump"), "-Fc", "-f", str(dump), f"--dbname={database_url()}"], check=True, env=pg_env
    )
    drill.settle(batch, timeout=180)  # the drain finishes: every write is at the EHR
    assert drill.committed() == total
    assert len(drill.sim.count_by_identifier(IDENTIFIER_SYSTEM)) == total

    # The restore: the ledger goes back to the backup; the EHR keeps what was sent since.
    connection.close()
    subprocess.run(
        [
            pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            f"--dbname={database_url()}",
            str(dump),
        ],
        check=True,
        env=pg_env,
        capture_output=True,
    )
    states = Write.objects.filter(tenant=drill.tenant).values("state").annotate(n=Count("id"))
    restored = {row["state"]: row["n"] for row in states}
    at_backup = restored.get(WriteState.COMMITTED, 0)
    assert total // 3 <= at_backup < total, restored  # the backup is behind the EHR
    behind = total - at_backup

    if procedure == "recover_after_restore":
        call_command(
            "recover_after_restore", "--tenant", drill.tenant.slug, "--since", backup_point.isoformat()
        )
        marked = Write.objects.filter(tenant=drill.tenant, verify_before_send=True).count()
        assert marked == behind
        run = ReconciliationRun.objects.get(tenant=drill.tenant)
        assert run.status == ReconciliationRun.Status.DONE
        assert not ReconciliationFinding.objects.filter(run=run).exists()  # the worker settles them by read

    drill.set_faults(None)
    drill.settle(drill.start(processes=2, concurrency=4, env=env), timeout=180)
    if procedure == "detected_by_the_worker":
        assert Alert.objects.filter(tenant=drill.tenant, code="restore-detected").exists()
        assert AuditEntry.objects.filter(action="restore.detected").exists()
    found = WriteAttempt.objects.filter(write__tenant=drill.tenant, outcome=WriteAttempt.Outcome.FOUND)
    assert found.values("write").distinct().count() == behind  # each found at the EHR, not sent again
    assert not Write.objects.filter(tenant=drill.tenant, verify_before_send=True).exists()
    headers = [r["headers"] for r in drill.sim.requests(5000) if r["method"] == "POST"]
    assert headers and not any("if-none-exist" in {k.lower() for k in h} for h in headers)
    call_command("verify_audit_chain")
    check_drill(
        drill, f"restore-{procedure}", extra={"committed_at_backup": at_backup, "found_by_read": behind}
    )
