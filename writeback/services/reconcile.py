"""Reconciliation of the ledger with the EHR: our identifier on every resource we create lets the EHR
tell us what landed, whatever our own database remembers.

A sweep pages through the tenant's resources carrying our identifier system (`identifier=SYSTEM|`,
`_count` per page, following `next` links; an adapter that cannot search that way says so and the run
is `unsupported`) and compares each page with the ledger in one batch (writes looked up by the
identifier values on the page, never one query per resource, never a scan of the ledger per resource):

- orphan: at the EHR, but no write of that identifier is committed in the ledger (a restore, another
  instance, a lost answer), or a second resource carries an identifier already committed elsewhere;
- missing: committed in the ledger, entered-in-error at the EHR, or absent from a complete sweep;
- drift: the EHR holds a version of the resource that none of our writes recorded, and the fields we
  wrote differ from what we committed (beyond what differed already at the read-back after commit).

Writes marked verify-before-send (after a restore) are left to the worker's check by read, which
settles them without a person. People work the findings: adopt an orphan, resend a missing write,
accept or correct drift; each decision is audited with who made it.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from adapters.classify import resource_version
from adapters.identifiers import our_identifier_value
from writeback import diffs
from writeback.errors import DomainError
from writeback.models import (
    AuditAction,
    ContractRule,
    ManualTask,
    ReconciliationFinding,
    ReconciliationRun,
    Severity,
    Tenant,
    Write,
    WriteAttempt,
)
from writeback.services import audit
from writeback.services.alerts import alert_raise
from writeback.services.permissions import require
from writeback.services.record import Recorder
from writeback.services.replay import write_resend_missing
from writeback.services.requests import identity_uid
from writeback.services.targets import adapter_for
from writeback.states import CLAIMABLE, WriteState

log = logging.getLogger(__name__)

Kind, FState = ReconciliationFinding.Kind, ReconciliationFinding.State
FINDINGS_ALERT = "reconciliation-findings"
NOT_CONTENT = ("id", "meta", "identifier", "text")
# Which actions each kind of finding offers, and the role-table action that gates each.
ACTIONS: dict[str, tuple[str, ...]] = {
    Kind.ORPHAN: ("adopt", "accept"),
    Kind.MISSING: ("resend", "accept"),
    Kind.DRIFT: ("accept", "correct"),
}
ACTION_PERMISSION = {
    "adopt": "replay",
    "resend": "replay",
    # Whether the EHR's state stands is a clinical judgement (or an admin's, for a known cause).
    "accept": "resolve_conflict",
    # Restoring a value in the chart is a clinical correction.
    "correct": "correction",
}


@dataclass
class _Sweep:
    run: ReconciliationRun
    system: str
    since: datetime | None
    complete: bool = True
    seen: set[str] = field(default_factory=set)  # identifier values found at the EHR
    new: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    settling: int = 0
    messages: list[str] = field(default_factory=list)


# -- the sweep -------------------------------------------------------------------------------------------


def reconcile_tenant(
    tenant: Tenant,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: Any = "system",
    page_size: int | None = None,
) -> ReconciliationRun:
    """Sweeps `tenant`'s EHR for resources carrying our identifier (last updated since `since`), and
    the ledger's committed creates made in [since, until]; records findings and returns the run."""
    if since and until and since > until:
        raise DomainError(400, "invalid-value", "the window's start is after its end", "since")
    name, _ = audit.actor_fields(actor)
    run = ReconciliationRun.objects.create(tenant=tenant, since=since, until=until, actor=name)
    sweep = _Sweep(run=run, system=settings.WRITEBACK_IDENTIFIER_SYSTEM, since=since)
    adapter = adapter_for(tenant)
    try:
        if not adapter.capabilities().search_by_identifier:
            run.status = ReconciliationRun.Status.UNSUPPORTED
            run.message = (
                f"{tenant.vendor} offers no search by identifier system: reconcile this tenant from the "
                "vendor's own reports"
            )
            return _finish(run, sweep, actor)
        run.resource_types = _swept_types(tenant)
        for resource_type in run.resource_types:
            _sweep_type(adapter, sweep, resource_type, page_size or settings.WRITEBACK_RECONCILE_PAGE_SIZE)
        if sweep.complete:
            _missing_from_sweep(tenant, sweep, since, until)
        else:
            sweep.messages.append(
                "a search failed: absence at the EHR was not concluded (no missing findings)"
            )
        run.status = ReconciliationRun.Status.DONE if sweep.complete else ReconciliationRun.Status.INCOMPLETE
        return _finish(run, sweep, actor)
    finally:
        adapter.close()


def _swept_types(tenant: Tenant) -> list[str]:
    """Types we may create (the contract) plus any the tenant's ledger has creates of."""
    types = {r.resource_type for r in ContractRule.objects.all() if "create" in (r.operations or [])}
    types |= set(
        Write.objects.filter(tenant=tenant, operation="create")
        .values_list("resource_type", flat=True)
        .distinct()
    )
    return sorted(types)


def _sweep_type(adapter, sweep: _Sweep, resource_type: str, page_size: int) -> None:
    params = {"identifier": f"{sweep.system}|", "_count": str(page_size)}
    if sweep.since:
        params["_lastUpdated"] = f"ge{sweep.since.isoformat()}"
    url = ""
    for _ in range(settings.WRITEBACK_RECONCILE_MAX_PAGES):
        page = adapter.search_page(resource_type, None if url else params, url=url)
        sweep.run.requests += max(1, len(page.exchanges))
        if page.outcome is not None:
            sweep.complete = False
            sweep.messages.append(f"{resource_type}: {page.message}")
            return
        fresh = [r for r in page.resources if _in_window(r, sweep.since)]
        sweep.run.resources_seen += len(fresh)
        _compare_page(sweep, resource_type, fresh)
        url = page.next_url
        if not url:
            return
    sweep.complete = False
    sweep.messages.append(f"{resource_type}: more than {settings.WRITEBACK_RECONCILE_MAX_PAGES} pages")


def _in_window(resource: dict[str, Any], since: datetime | None) -> bool:
    # A server may ignore `_lastUpdated`; the window is applied here as well.
    if since is None:
        return True
    stamp = parse_datetime(str((resource.get("meta") or {}).get("lastUpdated") or ""))
    return stamp is None or stamp >= since


def _uuids(values) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(str(uuid.UUID(v)))
        except ValueError:
            continue
    return out


def _compare_page(sweep: _Sweep, resource_type: str, resources: list[dict[str, Any]]) -> None:
    """One batch: the page's identifier values looked up in the ledger with a few queries."""
    tenant = sweep.run.tenant
    by_value: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for res in resources:
        value = our_identifier_value(res, sweep.system)
        if value:
            by_value[value].append(res)
    if not by_value:
        return
    values = list(by_value)
    sweep.seen.update(values)
    writes: dict[str, list[Write]] = defaultdict(list)
    ids = _uuids(values)
    # uid: unique index; context["identity"] (a replay's original): write_identity_idx.
    rows = Write.objects.filter(tenant=tenant).filter(Q(uid__in=ids) | Q(context__identity__in=values))
    for w in rows.select_related("tenant", "event").defer("event__raw_payload"):
        writes[identity_uid(w)].append(w)
    resource_ids = [str(r.get("id")) for group in by_value.values() for r in group]
    known = set(
        Write.objects.filter(tenant=tenant, resource_type=resource_type, target_resource_id__in=resource_ids)
        .exclude(target_version="")
        .values_list("target_resource_id", "target_version")
    )
    known |= set(
        ReconciliationFinding.objects.filter(
            tenant=tenant,
            kind=Kind.DRIFT,
            state__in=(FState.ACCEPTED, FState.CORRECTED),
            resource_id__in=resource_ids,
        ).values_list("resource_id", "version")
    )
    already_open = set(
        ReconciliationFinding.objects.filter(
            tenant=tenant, state=FState.OPEN, identifier_value__in=values
        ).values_list("kind", "identifier_value", "resource_id")
    )
    findings = []
    for value, found in by_value.items():
        for res in found:
            finding = _judge(sweep, resource_type, value, res, writes.get(value, []), known)
            if finding is None:
                continue
            if (finding.kind, value, finding.resource_id) in already_open:
                continue
            findings.append(finding)
            sweep.new[finding.kind] += 1
    ReconciliationFinding.objects.bulk_create(findings)


def _judge(
    sweep: _Sweep, resource_type: str, value: str, res: dict[str, Any], group: list[Write], known: set
) -> ReconciliationFinding | None:
    rid, version = str(res.get("id") or ""), resource_version(res)

    def finding(kind: str, write: Write | None, **detail: Any) -> ReconciliationFinding:
        return ReconciliationFinding(
            run=sweep.run,
            tenant=sweep.run.tenant,
            kind=kind,
            write=write,
            resource_type=resource_type,
            resource_id=rid,
            version=version,
            identifier_value=value,
            detail={"ehr_status": res.get("status", ""), **detail},
        )

    committed = [w for w in group if w.state == WriteState.COMMITTED]
    if any(w.state == WriteState.COMPENSATED for w in group) and not committed:
        return None  # undone on purpose: entered-in-error is what we expect there
    if not committed:
        if any(w.verify_before_send and w.state in CLAIMABLE for w in group) or any(
            w.lease_owner for w in group
        ):
            sweep.settling += 1  # the worker's check by read settles it
            return None
        open_write = next((w for w in group if w.state in CLAIMABLE), group[-1] if group else None)
        return finding(
            Kind.ORPHAN,
            open_write,
            ledger_state=open_write.state if open_write else "",
            reason="not committed in the ledger" if group else "no write of this identifier in the ledger",
        )
    write = max(committed, key=lambda w: w.pk)
    if write.target_resource_id and rid != write.target_resource_id:
        return finding(
            Kind.ORPHAN,
            write,
            ledger_state=write.state,
            duplicate_of=write.target_resource_id,
            reason="a second resource carries this write's identifier; the ledger has "
            f"{write.target_resource_id}",
        )
    if _entered_in_error(res):
        return finding(Kind.MISSING, write, reason="entered-in-error at the EHR")
    if version and (rid, version) not in known:
        diff = _content_diff(write, res)
        if not diff:
            return None  # a new version, but our fields hold what we committed
        return finding(
            Kind.DRIFT,
            write,
            committed_version=write.target_version,
            diff=diff,
            reason=f"the EHR holds version {version}; we committed version {write.target_version or '?'}",
        )
    return None


def _entered_in_error(res: dict[str, Any]) -> bool:
    """`status` on most types; Condition and AllergyIntolerance say it in `verificationStatus`."""
    if res.get("status") == "entered-in-error":
        return True
    codings = (res.get("verificationStatus") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("code") == "entered-in-error" for c in codings)


def _content_diff(write: Write, theirs: dict[str, Any]) -> list[dict[str, Any]]:
    """What the EHR holds differently from what we committed, less what already differed when it was
    read back at commit (the vendor's known way of storing it)."""
    mine = {k: v for k, v in (write.payload or {}).items() if k not in NOT_CONTENT}
    at_commit = {d.get("path") for d in write.readback_diff or [] if isinstance(d, dict)}
    return [d for d in diffs.readback_diff(mine, theirs) if d["path"] not in at_commit][:50]


def _missing_from_sweep(tenant: Tenant, sweep: _Sweep, since, until) -> None:
    """Committed creates of the window whose identifier no page carried (only after a complete sweep)."""
    qs = Write.objects.filter(
        tenant=tenant,
        state=WriteState.COMMITTED,
        operation="create",
        resource_type__in=sweep.run.resource_types,
    )
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lte=until)
    open_missing = set(
        ReconciliationFinding.objects.filter(tenant=tenant, kind=Kind.MISSING, state=FState.OPEN).values_list(
            "write_id", flat=True
        )
    )
    findings = []
    for write in qs.only(
        "pk", "uid", "context", "resource_type", "target_resource_id", "target_version"
    ).iterator(chunk_size=2000):
        if identity_uid(write) in sweep.seen or write.pk in open_missing:
            continue
        findings.append(
            ReconciliationFinding(
                run=sweep.run,
                tenant=tenant,
                kind=Kind.MISSING,
                write=write,
                resource_type=write.resource_type,
                resource_id=write.target_resource_id,
                version=write.target_version,
                identifier_value=identity_uid(write),
                detail={"reason": "no resource at the EHR carries this write's identifier"},
            )
        )
        sweep.new[Kind.MISSING] += 1
        if len(findings) >= 1000:
            ReconciliationFinding.objects.bulk_create(findings)
            findings = []
    ReconciliationFinding.objects.bulk_create(findings)


def _finish(run: ReconciliationRun, sweep: _Sweep, actor: Any) -> ReconciliationRun:
    run.counts = {**{k: sweep.new.get(k, 0) for k in Kind.values}, "settling_by_read": sweep.settling}
    run.message = "; ".join([run.message, *sweep.messages]).strip("; ")[:4000]
    run.finished_at = timezone.now()
    total = sum(sweep.new.values())
    with transaction.atomic():
        run.save()
        drafts = [
            audit.draft(
                AuditAction.RECONCILIATION_FINISHED,
                actor=actor,
                tenant=run.tenant.slug,
                object_type="reconciliation",
                object_id=str(run.uid),
                data={
                    "status": run.status,
                    "since": run.since.isoformat() if run.since else None,
                    "until": run.until.isoformat() if run.until else None,
                    "requests": run.requests,
                    "resources_seen": run.resources_seen,
                    "counts": run.counts,
                },
            )
        ]
        if total:
            parts = ", ".join(f"{n} {k}" for k, n in run.counts.items() if n and k in Kind.values)
            alert_raise(
                tenant=run.tenant,
                code=FINDINGS_ALERT,
                severity=Severity.CRITICAL if sweep.new.get(Kind.MISSING) else Severity.WARNING,
                message=f"reconciliation found {parts} (run {run.uid}); work them on the reconciliation page",
                drafts=drafts,
            )
        audit.record_many(drafts)
    log.info("reconciliation of %s: %s %s", run.tenant.slug, run.status, run.counts)
    return run


def reconcile_due(now: datetime | None = None) -> list[ReconciliationRun]:
    """The worker's schedule: tenants whose settings ask for a sweep every N minutes
    (`settings["reconcile_every_minutes"]`, off by default) get one when their last run is that old.
    The window starts where the last scheduled run's started (overlap is harmless: open findings are
    not recorded twice)."""
    now = now or timezone.now()
    runs = []
    for tenant in Tenant.objects.exclude(mode="paused"):
        minutes = (tenant.settings or {}).get("reconcile_every_minutes")
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes <= 0:
            continue
        last = ReconciliationRun.objects.filter(tenant=tenant).order_by("-started_at").first()
        if last is not None and (now - last.started_at).total_seconds() < minutes * 60:
            continue
        runs.append(reconcile_tenant(tenant, since=last.started_at if last else None, actor="scheduler"))
    return runs


# -- people's decisions ----------------------------------------------------------------------------------


def finding_decide(
    *,
    finding: ReconciliationFinding,
    user: Any,
    action: str,
    note: str,
    request_id: str = "",
    channel: str = "api",
) -> ReconciliationFinding:
    """Adopt, resend, accept or correct one finding. Refused (and audited) for a role the table does not
    give the action, a tenant the person may not act on, or an action the finding's kind does not offer."""
    if action not in ACTION_PERMISSION:
        raise DomainError(
            400, "invalid-value", f"action must be one of {', '.join(ACTION_PERMISSION)}", "action"
        )
    require(
        user,
        ACTION_PERMISSION[action],
        finding.tenant,
        object_type="reconciliation_finding",
        object_id=str(finding.uid),
        request_id=request_id,
        channel=channel,
    )
    note = (note or "").strip()
    if not note:
        raise DomainError(400, "reason-required", "say why (a note is required)", "note")
    with transaction.atomic():
        finding = (
            ReconciliationFinding.objects.select_for_update(of=("self",))
            .select_related("tenant", "write")
            .get(pk=finding.pk)
        )
        if not finding.is_open:
            raise DomainError(409, "already-decided", f"this finding is already {finding.state}", "state")
        if action not in ACTIONS[finding.kind]:
            raise DomainError(
                409, "invalid-action", f"a {finding.kind} finding offers {' or '.join(ACTIONS[finding.kind])}"
            )
        audit_action, fields = _DECISIONS[action](finding, user, note, request_id)
        for name, value in {**fields, "decided_by": user, "decided_at": timezone.now(), "note": note}.items():
            setattr(finding, name, value)
        finding.save()
        audit.record(
            audit_action,
            actor=user,
            tenant=finding.tenant.slug,
            object_type="reconciliation_finding",
            object_id=str(finding.uid),
            write_uid=str(finding.write.uid) if finding.write else "",
            correlation_id=finding.write.correlation_id if finding.write else "",
            request_id=request_id,
            data={
                "kind": finding.kind,
                "resource": f"{finding.resource_type}/{finding.resource_id}",
                "version": finding.version,
                "note": note,
                **({"replay_write": str(finding.resolution_write.uid)} if finding.resolution_write else {}),
                **({"task": str(finding.task.uid)} if finding.task else {}),
            },
        )
    return finding


def _adopt(finding: ReconciliationFinding, user: Any, note: str, request_id: str):
    """The orphan's write becomes committed, recorded as found at the EHR (an attempt says so)."""
    if finding.write is None:
        raise DomainError(409, "no-write", "no write of this identifier is in the ledger: accept it instead")
    write = (
        Write.objects.select_for_update(of=("self",))
        .select_related("tenant", "event")
        .get(pk=finding.write_id)
    )
    if finding.detail.get("duplicate_of"):
        raise DomainError(
            409,
            "duplicate",
            f"this write is committed as {finding.detail['duplicate_of']}: this resource is a second chart "
            "entry; have it marked entered-in-error in the EHR and accept the finding",
        )
    if write.state not in CLAIMABLE:
        raise DomainError(409, "invalid-transition", f"a {write.state} write cannot be adopted", "state")
    if write.lease_owner:
        raise DomainError(
            409, "in-flight", "a worker is sending this write now; try again in a moment", "state"
        )
    Recorder(f"reconciliation:{audit.actor_fields(user)[0]}").committed(
        write,
        exchanges=[],
        resource_id=finding.resource_id,
        version=finding.version,
        guarantee=write.guarantee or "ledger",
        counted=False,
        outcome=WriteAttempt.Outcome.FOUND,
        note=f"adopted from reconciliation run {finding.run.uid}: found at the EHR as "
        f"{finding.resource_type}/{finding.resource_id}; not sent again",
    )
    _note_found(write, finding)
    return AuditAction.RECONCILIATION_ADOPTED, {"state": FState.ADOPTED}


def _note_found(write: Write, finding: ReconciliationFinding) -> None:
    last = (
        WriteAttempt.objects.filter(write=write, outcome=WriteAttempt.Outcome.FOUND).order_by("-id").first()
    )
    if last is not None:
        WriteAttempt.objects.filter(pk=last.pk).update(
            error=f"found at the EHR by reconciliation as {finding.resource_type}/{finding.resource_id}: "
            "adopted"
        )


def _resend(finding: ReconciliationFinding, user: Any, note: str, request_id: str):
    if finding.write is None:
        raise DomainError(409, "no-write", "no write to resend")
    new = write_resend_missing(write=finding.write, user=user, reason=note, request_id=request_id)
    return AuditAction.RECONCILIATION_RESENT, {"state": FState.RESENT, "resolution_write": new}


def _accept(finding: ReconciliationFinding, user: Any, note: str, request_id: str):
    return AuditAction.RECONCILIATION_ACCEPTED, {"state": FState.ACCEPTED}


def _correct(finding: ReconciliationFinding, user: Any, note: str, request_id: str):
    """Drift on a resource the EHR owns after creation: a clinician restores our values in the EHR's own
    screens (we never overwrite a clinician's later edit from here)."""
    if finding.write is None:
        raise DomainError(409, "no-write", "no write to restore from")
    changes = "\n".join(
        f"- {d['path']}: we wrote {d.get('sent')!r}, the EHR holds {d.get('stored')!r}"
        for d in finding.detail.get("diff") or []
    )
    task = ManualTask.objects.create(
        tenant=finding.tenant,
        write=finding.write,
        role="clinician",
        title=f"Restore {finding.resource_type}/{finding.resource_id} as committed",
        instructions=(
            f"The EHR holds version {finding.version} of {finding.resource_type}/{finding.resource_id}; "
            f"we committed version {finding.detail.get('committed_version') or '?'}.\n"
            f"{changes or 'No field-level difference was recorded.'}\n"
            f"Reason given: {note}"
        ),
    )
    return AuditAction.RECONCILIATION_CORRECTION_REQUESTED, {"state": FState.CORRECTED, "task": task}


_DECISIONS = {"adopt": _adopt, "resend": _resend, "accept": _accept, "correct": _correct}
