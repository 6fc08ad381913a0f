"""The promise every drill ends on, checked against what the simulator stores and what the ledger says:

- every write is in a final or visible state (committed, conflict, or failed_terminal with an Alert),
  holds no lease, and a conflict has its base / ours / theirs record;
- creates: exactly one resource carries each committed write's identifier, none carries an uncommitted
  one, and nothing else carries our identifier system;
- updates (Patient, Task): the target's content changed exactly once per committed write and not at all
  for the others (besides clinicians' edits), and its version moved exactly once per committed write,
  per concurrent edit and per stale-version fault: a change applied twice would show as one more version;
- no create was sent again after it had landed: the simulator answers a conditional create that
  matches an existing resource with 200 instead of 201, so each such answer is a resend that only the
  target's If-None-Exist caught; on a vendor without conditional create (Epic, athena v1, Unity) it
  would have been a second chart entry. Check-by-read must make these 0;
- the audit chain verifies.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from writeback.models import Alert, Conflict, Write, WriteAttempt
from writeback.services.audit import verify_chain
from writeback.states import WriteState

if TYPE_CHECKING:
    from tests.drills.conftest import Drill

IDENTIFIER_SYSTEM = "urn:fhir-writeback:write-id"
VISIBLE = (WriteState.COMMITTED, WriteState.CONFLICT, WriteState.FAILED_TERMINAL)
RETRY_OUTCOMES = (
    WriteAttempt.Outcome.RETRYABLE,
    WriteAttempt.Outcome.AMBIGUOUS,
    WriteAttempt.Outcome.FOUND,
    WriteAttempt.Outcome.NOT_FOUND,
    WriteAttempt.Outcome.LOST,
)
NOT_CONTENT = ("meta",)
REQUEST_LOG_SIZE = 5000  # the simulator keeps the last 5,000 requests


@dataclass
class DrillReport:
    name: str
    events: int
    writes: int
    committed: int
    retried: int
    conflicts: int
    failed_terminal: int
    duplicates: int
    lost: int
    resent: int
    mismatched: int
    seconds: float
    faults: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        faults = ",".join(f"{k}:{v}" for k, v in sorted(self.faults.items())) or "none"
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"DRILL {self.name}: events={self.events} writes={self.writes} committed={self.committed} "
            f"retried={self.retried} conflicts={self.conflicts} failed_terminal={self.failed_terminal} "
            f"duplicates_at_target={self.duplicates} lost={self.lost} resent_after_landing={self.resent} "
            f"ledger_mismatch={self.mismatched} "
            f"faults[{faults}]{extra} "
            f"time={self.seconds:.1f}s"
        )


def _content(resource: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in resource.items() if k not in NOT_CONTENT}, sort_keys=True)


def _history(client: httpx.Client, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
    """Every version of a resource, oldest first (read over the simulator's FHIR API)."""
    response = client.get(f"{resource_type}/{resource_id}/_history", params={"_count": 1000})
    response.raise_for_status()
    versions = [entry["resource"] for entry in response.json().get("entry", [])]
    return sorted(versions, key=lambda r: int(r["meta"]["versionId"]))


def _holds_ours(write: Write, current: dict[str, Any]) -> bool:
    ours = {k: v for k, v in write.payload.items() if k not in ("resourceType", "id", "meta")}
    return all(current.get(k) == v for k, v in ours.items())


def check_drill(drill: Drill, name: str, *, extra: dict[str, Any] | None = None) -> DrillReport:
    """Checks the promise after a drill, prints one line of counts, then fails on any problem."""
    fired = drill.faults_fired()
    drill.set_faults(None)  # the checks read the simulator over HTTP: no faults on those reads
    writes = list(Write.objects.filter(tenant=drill.tenant).order_by("id"))
    problems: list[str] = []
    lost = duplicates = mismatched = 0

    # The ledger: final or visible, never leased, failures alerted, conflicts explained.
    alerted = set(Alert.objects.filter(write__in=writes).values_list("write_id", flat=True))
    explained = set(Conflict.objects.filter(write__in=writes).values_list("write_id", flat=True))
    for w in writes:
        if w.state not in VISIBLE:
            lost += 1
            problems.append(f"{w} left in {w.state} (last: {w.last_outcome} {w.last_error[:120]})")
        if w.lease_owner:
            problems.append(f"{w} still leased by {w.lease_owner}")
        if w.state == WriteState.FAILED_TERMINAL and w.pk not in alerted:
            lost += 1
            problems.append(f"{w} failed without an alert")
        if w.state == WriteState.CONFLICT and w.pk not in explained:
            problems.append(f"{w} is a conflict without a Conflict record")

    # Provenance (R4 gives it no identifier): PUT under the write's uid, so one resource per committed
    # write, at its first version; a second version would be the same Provenance sent twice.
    attestations = [w for w in writes if w.resource_type == "Provenance"]
    held = {r["id"]: r for r in drill.sim.resources("Provenance")}
    for w in attestations:
        stored = held.get(str(w.uid))
        if stored is None:
            if w.state == WriteState.COMMITTED:
                lost += 1
                problems.append(f"{w}: committed but not at the target")
            continue
        if w.state != WriteState.COMMITTED:
            mismatched += 1
            problems.append(f"{w}: {w.state}, yet the target holds it")
        if str(stored["meta"]["versionId"]) != "1":
            duplicates += int(stored["meta"]["versionId"]) - 1
            problems.append(f"{w}: sent {stored['meta']['versionId']} times")
    unknown = set(held) - {str(w.uid) for w in attestations}
    if unknown:
        duplicates += len(unknown)
        problems.append(f"{len(unknown)} Provenances of no write: {sorted(unknown)[:5]}")

    # Creates: one resource per committed write, found by our identifier.
    creates = [w for w in writes if w.operation == "create" and w.resource_type != "Provenance"]
    at_target = drill.sim.count_by_identifier(IDENTIFIER_SYSTEM)
    for w in creates:
        count = at_target.get(str(w.uid), 0)
        expected = 1 if w.state == WriteState.COMMITTED else 0
        if count > 1:
            duplicates += count - 1
            problems.append(f"{w}: {count} resources at the target carry its identifier")
        elif count > expected:
            mismatched += 1
            problems.append(f"{w}: {w.state}, yet a resource carries its identifier")
        elif count < expected:
            lost += 1
            problems.append(f"{w}: committed but not at the target")
        elif count:
            stored = drill.sim.resources(w.resource_type, identifier=f"{IDENTIFIER_SYSTEM}|{w.uid}")
            if [r["id"] for r in stored] != [w.target_resource_id]:
                problems.append(f"{w}: ledger says {w.target_resource_id}, target holds {stored}")
    strangers = set(at_target) - {str(w.uid) for w in creates}
    if strangers:
        duplicates += len(strangers)
        problems.append(f"{len(strangers)} resources carry identifiers of no write: {sorted(strangers)[:5]}")

    # Updates: our change landed once per committed write and never for the others; every version of
    # every target is accounted for (ours, clinicians' edits, stale-version faults), so a change applied
    # twice shows as a version too many even when its content is the same.
    updates = [w for w in writes if w.operation in ("update", "patch")]
    bumps = explained = 0
    with httpx.Client(base_url=drill.sim.fhir_base + "/", timeout=10) as client:
        for w in updates:
            target = (w.resource_type, w.target_resource_id)
            versions = _history(client, *target)
            changes = sum(_content(a) != _content(b) for a, b in zip(versions, versions[1:], strict=False))
            ours = changes - drill.edits[target]
            bumps += len(versions) - 1
            explained += ours
            if ours > 1:
                duplicates += ours - 1
                problems.append(f"{w}: the target's content changed {ours} times for it")
            elif w.state == WriteState.COMMITTED and not (ours == 1 and _holds_ours(w, versions[-1])):
                lost += 1
                problems.append(f"{w}: committed but the target does not hold the change")
            elif w.state != WriteState.COMMITTED and ours == 1:
                mismatched += 1
                problems.append(f"{w}: {w.state}, yet the target holds its change")
    explained += fired.get("stale_version", 0) + sum(drill.edits.values())
    if bumps > explained:
        duplicates += bumps - explained
        problems.append(f"update targets moved {bumps} versions; {explained} are accounted for")

    # Creates sent again after they had landed (answered 200 by the conditional create).
    log = drill.sim.requests(REQUEST_LOG_SIZE)
    if len(log) >= REQUEST_LOG_SIZE:
        problems.append("the simulator's request log overflowed: resends cannot be counted")
    resent = [
        r
        for r in log
        if r["method"] == "POST"
        and r["status"] == 200
        and "if-none-exist" in {k.lower() for k in r["headers"]}
    ]
    if resent:
        problems.append(
            f"{len(resent)} creates were sent again after they had landed (saved only by If-None-Exist): "
            + ", ".join(r["headers"].get("if-none-exist", "") for r in resent[:3])
        )

    chain = verify_chain()
    if not chain.ok:
        problems.append(f"audit chain: {chain}")

    states = Counter(w.state for w in writes)
    retried = (
        Write.objects.filter(tenant=drill.tenant, attempts_log__outcome__in=RETRY_OUTCOMES).distinct().count()
    )
    report = DrillReport(
        name=name,
        events=drill.events,
        writes=len(writes),
        committed=states[WriteState.COMMITTED],
        retried=retried,
        conflicts=states[WriteState.CONFLICT],
        failed_terminal=states[WriteState.FAILED_TERMINAL],
        duplicates=duplicates,
        lost=lost,
        resent=len(resent),
        mismatched=mismatched,
        seconds=time.monotonic() - drill.started,
        faults=dict(fired),
        extra={
            **(extra or {}),
            "audit_entries": chain.checked,
            **{f"{phase}_s": f"{secs:.1f}" for phase, secs in sorted(drill.phases.items())},
        },
        problems=problems,
    )
    drill.say(report.line())
    if problems:
        pytest.fail(f"{len(problems)} problem(s) after drill {name}:\n" + "\n".join(problems[:30]))
    assert report.duplicates == report.lost == report.resent == report.mismatched == 0
    return report
