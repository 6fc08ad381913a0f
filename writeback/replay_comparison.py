"""Reads: a test replay beside its original (the comparison page, and the shadow page's "Test replays").

A copy made by `services.sandbox.replay_into_test` names its original in `context.test_replay_of`. A
comparison shows both sides: tenant, state, decision (approval, contract version), the resource each
sent field by field, and where both committed what each target stored (the read-back diffs the ledger
holds; the EHR is never called from here).

Who sees it: people holding the replay role (admins and engineers, who make such copies) who may see
BOTH tenants. Anyone else gets "no such thing" (None here, a 404 in the console; no rows in the shadow
part), never a refusal naming the other tenant: that would tell them it exists.
"""

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q

from writeback import diffs
from writeback.models import Approval, Tenant, Write
from writeback.selectors import tenants_visible_to
from writeback.services.permissions import has_role_for
from writeback.services.requests import identity_uid
from writeback.states import WriteState

LINEAGE = "test_replay_of"
# Copies the shadow page reads per window (newest first); test tenants hold few, this only bounds it.
SAMPLE = 2_000
RECENT = 10
_COPY_COLUMNS = (
    "uid",
    "tenant_id",
    "resource_type",
    "state",
    "payload",
    "context",
    "payload_purged_at",
    "event__uid",
)
# The event's big JSON columns: nothing here reads them.
_EVENT_BODIES = ("event__raw_payload", "event__canonical_payload", "event__consent_snapshot")


@dataclass
class Side:
    write: Write
    decision: Approval | None  # the latest approval decision on it, if any


@dataclass
class Pair:
    original: Side
    copy: Side
    compared: int
    sent: list[dict[str, Any]]
    # None unless both committed; then the paths where either target stored differently.
    stored: list[dict[str, Any]] | None
    purged: bool  # retention blanked a side's payload: nothing left to compare

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.original, self.copy

    @property
    def differs(self) -> bool:
        return bool(self.sent)

    @property
    def stored_differs(self) -> bool:
        return any(row["differs"] for row in self.stored or [])


@dataclass
class Comparison:
    write: Write  # the write the page was opened from
    pairs: list[Pair]


def _own_ids(write_identity: str, write_uid: str, event_uid: str) -> dict[str, str]:
    # Replays carry the id of the write they stand in for (identity_uid); either way it is "this write".
    return {write_identity: "(this write)", write_uid: "(this write)", event_uid: "(this event)"}


def _ids_of(write: Write) -> dict[str, str]:
    return _own_ids(identity_uid(write), str(write.uid), str(write.event.uid))


def _uid(value: Any) -> str | None:
    """`value` as a write id, or None: lineage is JSON, and a malformed id must not become a 500."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def may_compare(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active and has_role_for(user, "replay"))


@dataclass
class ComparisonLinks:
    """What the write page shows of a test replay's lineage: whether `user` may see its original, how
    many of its copies they may see, and whether they may open the comparison (the replay role)."""

    original: bool = False
    copies: int = 0
    compare: bool = False

    @property
    def comparison(self) -> bool:
        return self.compare and (self.original or self.copies > 0)


def comparison_links(
    user: Any, write: Write, *, sandboxes: list[Tenant], visible_ids: list[int]
) -> ComparisonLinks:
    """At most one query: the original of `write` among the tenants `visible_ids`, and (for those who
    may compare) its copies in `sandboxes`, the test tenants of its vendor that `user` may see."""
    origin = _uid(((write.context or {}).get(LINEAGE) or {}).get("write"))
    compare = may_compare(user) and write.tenant_id in visible_ids
    found = Q(uid=origin, tenant_id__in=visible_ids) if origin else None
    if compare and sandboxes:
        copies = Q(tenant_id__in=[t.pk for t in sandboxes], **{f"context__{LINEAGE}__write": str(write.uid)})
        found = copies if found is None else found | copies
    if found is None:
        return ComparisonLinks(compare=compare)
    uids = {str(u) for u in Write.objects.filter(found).exclude(pk=write.pk).values_list("uid", flat=True)}
    return ComparisonLinks(original=origin in uids, copies=len(uids - {origin}), compare=compare)


def replay_comparison_get(user: Any, uid: Any) -> Comparison | None:
    """The write `uid` beside its original (if it is a copy) and beside its copies (if it has any), in
    a constant number of queries; None when there is nothing `user` may see both sides of."""
    if not may_compare(user):
        return None
    tenants = {t.pk: t for t in tenants_visible_to(user)}
    writes = Write.objects.defer(*_EVENT_BODIES).select_related("event")
    write = writes.filter(uid=uid, tenant_id__in=list(tenants)).first()
    if write is None:
        return None
    origin = _uid(((write.context or {}).get(LINEAGE) or {}).get("write"))
    original = writes.filter(uid=origin, tenant_id__in=list(tenants)).first() if origin else None
    # Copies live only in test tenants of the write's vendor: looking only there keeps this on the
    # tenant index, and the JSON key is read for those tenants' writes, not the whole ledger's.
    sandboxes = [t.pk for t in tenants.values() if t.is_test and t.vendor == tenants[write.tenant_id].vendor]
    copies = list(
        writes.filter(tenant_id__in=sandboxes, **{f"context__{LINEAGE}__write": str(write.uid)})
        .exclude(pk=write.pk)
        .order_by("id")
    )
    pairs = ([(original, write)] if original is not None else []) + [(write, c) for c in copies]
    if not pairs:
        return None
    involved = {w.pk: w for pair in pairs for w in pair}
    for w in involved.values():
        w.tenant = tenants[w.tenant_id]
    decisions = _latest_decisions(list(involved))
    return Comparison(
        write=write, pairs=[_pair(a, b, decisions.get(a.pk), decisions.get(b.pk)) for a, b in pairs]
    )


def _latest_decisions(write_ids: list[int]) -> dict[int, Approval]:
    latest: dict[int, Approval] = {}
    decided = Approval.objects.filter(write_id__in=write_ids).select_related("approver")
    for a in decided.order_by("decided_at", "id"):
        latest[a.write_id] = a
    return latest


def _pair(original: Write, copy: Write, original_decision, copy_decision) -> Pair:
    purged = bool(original.payload_purged_at or copy.payload_purged_at)
    ids = (_ids_of(original), _ids_of(copy))
    compared, sent = (0, []) if purged else diffs.replay_sent_diff(original.payload, copy.payload, *ids)
    stored = None
    if not purged and original.state == WriteState.COMMITTED and copy.state == WriteState.COMMITTED:
        stored = diffs.replay_stored_diff(
            original.payload, original.readback_diff, copy.payload, copy.readback_diff, *ids
        )
    return Pair(Side(original, original_decision), Side(copy, copy_decision), compared, sent, stored, purged)


# -- the shadow page's part ---------------------------------------------------------------------------


@dataclass
class CopyRow:
    copy_uid: str
    original_uid: str
    original_tenant: str
    resource_type: str
    state: str
    fields: list[str]


@dataclass
class SandboxReplays:
    slug: str
    name: str
    copies: int = 0
    differing: int = 0
    purged: int = 0
    fields: list[tuple[str, str, int]] = field(default_factory=list)  # (resource type, path, copies)
    recent: list[CopyRow] = field(default_factory=list)  # newest first, those that differ first


@dataclass
class SandboxReplayReport:
    tenants: list[SandboxReplays]
    truncated: bool


def sandbox_replay_summary(user: Any, tenants: Iterable[Tenant], *, since: datetime) -> SandboxReplayReport:
    """Per test tenant among `tenants` (those `user` may see): the copies made since `since` whose
    original `user` may see too, how many send something else than their original and in which fields.
    Three queries, whatever the ledger holds."""
    if not may_compare(user):
        return SandboxReplayReport([], False)
    tenants = list(tenants)
    sandboxes = {t.pk: t for t in tenants if t.is_test}
    if not sandboxes:
        return SandboxReplayReport([], False)
    copies = list(
        Write.objects.filter(tenant_id__in=list(sandboxes), created_at__gte=since, context__has_key=LINEAGE)
        .order_by("-id")
        .values_list(*_COPY_COLUMNS)[: SAMPLE + 1]
    )
    originals = _originals(copies[:SAMPLE], [t.pk for t in tenants])
    by_tenant = {pk: SandboxReplays(t.slug, t.name or t.slug) for pk, t in sandboxes.items()}
    counts: dict[int, Counter] = defaultdict(Counter)
    for uid, tenant_id, resource_type, state, payload, context, purged_at, event_uid in copies[:SAMPLE]:
        original = originals.get(_uid(((context or {}).get(LINEAGE) or {}).get("write")) or "")
        if original is None:
            continue  # an original this person may not see: the copy is left out, not counted
        report = by_tenant[tenant_id]
        report.copies += 1
        if purged_at or original["purged"]:
            report.purged += 1
            continue
        identity = (context or {}).get("identity") or str(uid)
        _, sent = diffs.replay_sent_diff(
            original["payload"], payload, original["ids"], _own_ids(identity, str(uid), str(event_uid))
        )
        paths = [row["path"] for row in sent]
        if paths:
            report.differing += 1
            counts[tenant_id].update((resource_type, p) for p in paths)
        report.recent.append(
            CopyRow(str(uid), original["uid"], original["tenant"], resource_type, state, paths)
        )
    for tenant_id, report in by_tenant.items():
        report.fields = sorted(
            ((rt, path, n) for (rt, path), n in counts[tenant_id].items()), key=lambda r: (-r[2], r[0], r[1])
        )
        report.recent = sorted(report.recent, key=lambda r: not r.fields)[:RECENT]
    return SandboxReplayReport(
        tenants=[by_tenant[pk] for pk in sorted(by_tenant, key=lambda pk: by_tenant[pk].slug)],
        truncated=len(copies) > SAMPLE,
    )


def _originals(copies: list[tuple], visible_ids: list[int]) -> dict[str, dict[str, Any]]:
    """The originals of `copies` among the tenants `visible_ids`, by uid, in one query."""
    uids = {_uid(((c[5] or {}).get(LINEAGE) or {}).get("write")) for c in copies} - {None}
    rows = Write.objects.filter(uid__in=sorted(uids), tenant_id__in=visible_ids).values_list(
        "uid", "tenant__slug", "payload", "context", "payload_purged_at", "event__uid"
    )
    return {
        str(uid): {
            "uid": str(uid),
            "tenant": slug,
            "payload": payload,
            "purged": purged_at is not None,
            "ids": _own_ids((context or {}).get("identity") or str(uid), str(uid), str(event_uid)),
        }
        for uid, slug, payload, context, purged_at, event_uid in rows
    }
