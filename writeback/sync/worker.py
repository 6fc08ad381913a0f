"""The sync worker loop: claim due writes in batches, process them on a thread pool, record the outcomes
of every write finished in one turn together (one transaction), repeat.

Bulkheads: each tenant may have at most `tenant.max_concurrency` writes in flight in this process, so a
slow or dead EHR ties up only its share of the threads while other tenants flow on. More throughput
comes from more processes (on more hosts) against the same PostgreSQL; claims never overlap.
"""

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from adapters.base import VendorAdapter
from writeback import logcontext
from writeback.models import Tenant, Write
from writeback.services import counts, restore
from writeback.services.alert_housekeeping import alerts_housekeeping
from writeback.services.backoff import reconnect_delay
from writeback.services.bulk import bulk_process_due
from writeback.services.holds import current_holds
from writeback.services.reconcile import reconcile_due
from writeback.services.record import Settlement, settle
from writeback.services.send_reads import SendReads, load_send_reads
from writeback.services.targets import adapter_for
from writeback.sync.claim import claim_due, has_open_work, lapsed_in_flight, release, renew_leases
from writeback.sync.process import Result, WriteProcessor

# The ledger counts' delta rows are folded this often (the counts are exact between foldings too).
COMPACT_EVERY_SECONDS = 30.0

log = logging.getLogger(__name__)

# The restore marker and scheduled reconciliation sweeps: checked this often, not every loop.
SLOW_HOUSEKEEPING_SECONDS = 10.0

# What a lost database connection raises (psycopg's errors, wrapped by Django).
DB_ERRORS = (OperationalError, InterfaceError)


def make_worker_id() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class AdapterCache:
    """One adapter (one HTTP connection pool) per thread and tenant, rebuilt when the tenant changes."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, tenant: Tenant) -> VendorAdapter:
        cache = getattr(self._local, "adapters", None)
        if cache is None:
            cache = self._local.adapters = {}
        key = (tenant.pk, tenant.updated_at)
        entry = cache.get(tenant.pk)
        if entry is None or entry[0] != key:
            if entry is not None:
                entry[1].close()
            entry = cache[tenant.pk] = (key, adapter_for(tenant))
        return entry[1]

    def close_thread(self) -> None:
        for _, adapter in getattr(self._local, "adapters", {}).values():
            adapter.close()
        self._local.adapters = {}


def _ids_of(slugs: list[str]) -> list[int]:
    ids = list(Tenant.objects.filter(slug__in=slugs).values_list("pk", flat=True))
    if len(ids) != len(set(slugs)):
        known = set(Tenant.objects.filter(pk__in=ids).values_list("slug", flat=True))
        raise ValueError(f"unknown tenant(s): {', '.join(sorted(set(slugs) - known))}")
    return ids


@dataclass
class WorkerStats:
    processed: int = 0
    by_label: Counter = field(default_factory=Counter)
    db_outages: int = 0  # times the database became unreachable
    db_errors: int = 0  # failed turns of the loop while it was
    unrecorded: int = 0  # writes handed back to the ledger because their outcome could not be recorded


class SyncWorker:
    def __init__(
        self,
        *,
        worker_id: str | None = None,
        concurrency: int | None = None,
        tenant_slugs: list[str] | None = None,
        exclude_slugs: list[str] | None = None,
        until_idle: bool = False,
        max_writes: int | None = None,
        idle_sleep: float | None = None,
    ) -> None:
        self.worker_id = worker_id or make_worker_id()
        self.concurrency = concurrency or settings.WRITEBACK_WORKER_CONCURRENCY
        self.batch = max(1, self.concurrency // 2)
        self.tenant_slugs = tenant_slugs
        self.exclude_slugs = exclude_slugs or []
        self.until_idle = until_idle
        self.max_writes = max_writes
        self.idle_sleep = idle_sleep if idle_sleep is not None else settings.WRITEBACK_IDLE_SLEEP_SECONDS
        self.adapters = AdapterCache()
        self.processor = WriteProcessor(self.worker_id, self.adapters)
        self.stats = WorkerStats()
        self.stopping = threading.Event()
        self._claimed = 0
        self._last_housekeeping = 0.0
        self._last_slow_housekeeping = 0.0
        self._last_compaction = 0.0
        # Leases are renewed three times per lease length while a write is in flight.
        self._renew_every = max(0.1, settings.WRITEBACK_LEASE_SECONDS / 3)
        self._last_renewal = time.monotonic()
        self._scope: tuple[list[int] | None, list[int]] | None = None
        self._caps: dict[int, int] = {}
        self._sleep = self.idle_sleep
        self._db_failures = 0
        self._unrecorded: set[int] = set()
        self._unrecorded_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum, frame):
            log.info("%s: signal %s, finishing in-flight writes", self.worker_id, signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _tenant_ids(self) -> list[int] | None:
        if self.tenant_slugs is None:
            return None
        return _ids_of(self.tenant_slugs)

    def _excluded_ids(self) -> list[int]:
        """Tenants left to their own workers (sharding: a shared pool excludes the sharded tenants)."""
        return _ids_of(self.exclude_slugs) if self.exclude_slugs else []

    def run(self) -> WorkerStats:
        self._check_for_restore()
        inflight: dict[Future, Write] = {}
        per_tenant: Counter = Counter()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="sync") as pool:
            while not self.stopping.is_set():
                try:
                    if self._cycle(pool, inflight, per_tenant):
                        break
                except DB_ERRORS as exc:
                    # A restart, a failover, a network blip: the worker waits it out instead of exiting,
                    # so sending resumes on its own when the database is back.
                    self._database_lost(exc)
            # Stopping (SIGTERM, --max-writes): finish what is in flight, keeping its leases alive.
            while inflight:
                done, _ = wait(list(inflight), timeout=self._renew_every, return_when=FIRST_COMPLETED)
                for fut in done:
                    inflight.pop(fut)
                # A database error leaves these noted as unrecorded: handed back below, checked by read.
                with contextlib.suppress(*DB_ERRORS):
                    self._settle_finished([fut.result() for fut in done])
                self._renew(inflight)
        try:
            restore.write_marker()  # the head this worker leaves behind, for the next one's check
        except Exception:
            log.exception("%s: writing the restore marker failed", self.worker_id)
        with contextlib.suppress(*DB_ERRORS):
            self._forget_unrecorded()
        close_old_connections()
        return self.stats

    def _cycle(self, pool: ThreadPoolExecutor, inflight: dict[Future, Write], per_tenant: Counter) -> bool:
        """One turn of the loop: housekeeping, a claim, a wait for in-flight work. True: the worker is done
        (--until-idle found nothing left, or --max-writes reached). Database errors propagate to `run`."""
        if self._scope is None:
            self._scope = (self._tenant_ids(), self._excluded_ids())
            self._caps = dict(Tenant.objects.values_list("pk", "max_concurrency"))
        tenant_ids, excluded = self._scope
        caps = self._caps
        if self._db_failures:
            connection.ensure_connection()  # raises while the database is still away
            self._database_back()
        self._forget_unrecorded()
        self._housekeeping()
        free = self.concurrency - len(inflight)
        if self.max_writes is not None:
            free = min(free, self.max_writes - self._claimed)
        claimed: list[Write] = []
        reads: SendReads | None = None
        # Claim in batches (one claim costs about as much for 1 write as for 8): wait until half the
        # threads are free, unless nothing is in flight.
        if free > 0 and (free >= self.batch or not inflight):
            full = [t for t, n in per_tenant.items() if n >= caps.get(t, 4)]
            claimed = claim_due(
                self.worker_id,
                free,
                holds=current_holds(tenant_ids),
                tenant_ids=tenant_ids,
                exclude_tenants=[*full, *excluded],
            )
            try:
                claimed = self._within_bulkheads(claimed, per_tenant, caps)
                reads = load_send_reads(claimed)
            except DB_ERRORS:
                # Claimed but never started: hand them straight back once the database is reachable.
                for write in claimed:
                    self._note_unrecorded(write)
                raise
        for write in claimed:
            self._claimed += 1
            per_tenant[write.tenant_id] += 1
            inflight[pool.submit(self._run_one, write, reads)] = write
        if inflight:
            done, _ = wait(
                list(inflight),
                timeout=min(0.5 if claimed else self.idle_sleep, self._renew_every),
                return_when=FIRST_COMPLETED,
            )
            for fut in done:
                per_tenant[inflight.pop(fut).tenant_id] -= 1
            self._settle_finished([fut.result() for fut in done])
            self._renew(inflight)
            self._sleep = self.idle_sleep
            return False
        if self.max_writes is not None and self._claimed >= self.max_writes:
            return True
        if not claimed:
            if self.until_idle and not has_open_work(
                holds=current_holds(tenant_ids), tenant_ids=tenant_ids, exclude_tenants=excluded
            ):
                return True
            self.stopping.wait(self._sleep)
            self._sleep = min(self._sleep * 1.5, 5.0)  # back off while idle, wake fast when work appears
            self._caps = dict(Tenant.objects.values_list("pk", "max_concurrency"))
        return False

    # -- database outages --------------------------------------------------------------------------

    def _database_lost(self, exc: Exception) -> None:
        """Closes the broken connection and waits (capped exponential backoff with jitter, cut short by
        SIGTERM) before the loop tries again. In-flight writes carry on: their outcomes are recorded if
        the database is back in time, and otherwise forgotten and checked by read (`_forget_unrecorded`)."""
        self._db_failures += 1
        self.stats.db_errors += 1
        if self._db_failures == 1:
            self.stats.db_outages += 1
        with contextlib.suppress(Exception):
            connection.close()
        delay = reconnect_delay(self._db_failures)
        log.warning(
            "%s: database unavailable (%s: %s); try %d again in %.1f s",
            self.worker_id,
            type(exc).__name__,
            str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "",
            self._db_failures,
            delay,
        )
        self.stopping.wait(delay)

    def _database_back(self) -> None:
        log.warning(
            "%s: database reachable again after %d failed tr%s; resuming",
            self.worker_id,
            self._db_failures,
            "y" if self._db_failures == 1 else "ies",
        )
        self._db_failures = 0

    def _note_unrecorded(self, write: Write) -> None:
        with self._unrecorded_lock:
            self._unrecorded.add(write.pk)

    def _forget_unrecorded(self) -> None:
        """Writes whose processing died on a database error may have been sent without their outcome being
        recorded. This worker keeps nothing about them in memory: it lets go of their leases at once,
        leaving them marked in flight, so the ledger (not this process) decides what happens next. The
        housekeeping sweep marks them outcome unknown, and whoever claims one (this worker or another)
        looks it up on the target before sending anything. A write whose outcome was recorded after all
        (the commit landed, its answer was lost) no longer matches and is left alone."""
        with self._unrecorded_lock:
            ids, self._unrecorded = self._unrecorded, set()
        if not ids:
            return
        try:
            handed = Write.objects.filter(
                pk__in=ids, lease_owner=self.worker_id, last_outcome="in_flight"
            ).update(lease_expires_at=timezone.now() - timedelta(microseconds=1))
        except DB_ERRORS:
            with self._unrecorded_lock:
                self._unrecorded |= ids  # still away: try again on the next turn
            raise
        if not handed:
            return
        self.stats.unrecorded += handed
        log.warning(
            "%s: %d write(s) whose outcome could not be recorded handed back to the ledger; "
            "they are checked by read before any resend",
            self.worker_id,
            handed,
        )

    def _renew(self, inflight: dict[Future, Write]) -> None:
        now = time.monotonic()
        if not inflight or now - self._last_renewal < self._renew_every:
            return
        self._last_renewal = now
        try:
            renew_leases(self.worker_id, [w.pk for w in inflight.values()])
        except DB_ERRORS as exc:
            # The database may be away for a moment: the next beat tries again; a lease that lapses
            # meanwhile is handled like a dead worker's (check by read before any resend). The broken
            # connection is dropped so the next query opens a new one.
            log.warning("%s: lease renewal failed: %s", self.worker_id, str(exc).strip()[:200])
            if not connection.in_atomic_block:
                with contextlib.suppress(Exception):
                    connection.close()
        except Exception:
            log.exception("%s: lease renewal failed", self.worker_id)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = now
        self.housekeeping()

    def housekeeping(self) -> None:
        """One pass of the work no write claim carries (the loop runs it at most once a second): mark
        writes whose worker died mid-call as outcome unknown (so the ledger shows it even while nobody
        takes them over, e.g. under a hold), move bulk operations on (rate-limited) and fold the ledger
        counts' delta rows. Background work lives here, never in the web process."""
        try:
            # One settlement for the whole sweep; a write taken over meanwhile is left to its new holder.
            lost = [self.processor.record.lost(w, previous_owner=w.lease_owner) for w in lapsed_in_flight()]
            if lost:
                settle(lost, actor=self.worker_id)
        except DB_ERRORS:
            raise  # the loop waits for the database; the sweep runs again once it is back
        except Exception:
            log.exception("%s: marking lapsed leases failed", self.worker_id)
        try:
            bulk_process_due()
        except DB_ERRORS:
            raise
        except Exception:
            log.exception("%s: bulk replay step failed", self.worker_id)
        alerts_housekeeping()  # thresholds, escalations, deliveries; each step catches its own errors
        now = time.monotonic()
        if now - self._last_compaction >= COMPACT_EVERY_SECONDS:
            self._last_compaction = now
            try:
                counts.compact()
            except Exception:
                log.exception("%s: folding the ledger counts failed", self.worker_id)
        if now - self._last_slow_housekeeping >= SLOW_HOUSEKEEPING_SECONDS:
            self._last_slow_housekeeping = now
            try:
                restore.write_marker()
                reconcile_due()  # tenants that asked for scheduled sweeps (off by default)
            except Exception:
                log.exception("%s: restore marker or scheduled reconciliation failed", self.worker_id)

    def _check_for_restore(self) -> None:
        """A database behind the restore marker was restored: writes that may have landed since the
        backup are checked at the EHR before sending (writeback.services.restore)."""
        try:
            acted = restore.check_for_restore(actor=self.worker_id)
        except Exception:
            log.exception("%s: restore check failed", self.worker_id)
            return
        if acted:
            log.warning("%s: database restore detected; verify before sending: %s", self.worker_id, acted)

    def _within_bulkheads(self, claimed, per_tenant: Counter, caps: dict) -> list:
        """A batch may hold more of one tenant than its cap allows: give the excess back at once."""
        keep, taken = [], Counter(per_tenant)
        for write in claimed:
            if taken[write.tenant_id] >= caps.get(write.tenant_id, 4):
                release(write)
                continue
            taken[write.tenant_id] += 1
            keep.append(write)
        return keep

    def _run_one(self, write, reads: SendReads | None = None) -> Result | None:
        with logcontext.for_write(write):
            return self._process_one(write, reads)

    def _process_one(self, write, reads: SendReads | None) -> Result | None:
        """Processes one write on a pool thread; its outcome comes back unrecorded (`_settle_finished`).
        `reads`: its batch's pre-send re-check rows, read once for the batch (`load_send_reads`)."""
        try:
            return self.processor.attempt(write, reads)
        except DB_ERRORS as exc:
            # The database went away mid-write: whether the request left is unknown to us now. Forget
            # the write here; the ledger still marks it in flight (see _forget_unrecorded).
            log.warning(
                "%s: database error while processing write %s: %s",
                self.worker_id,
                write.uid,
                str(exc).strip()[:200],
            )
            self.stats.by_label["db-error"] += 1
            self._note_unrecorded(write)
            return None
        except Exception:
            # A bug must not kill the worker or lose the write: the lease lapses and the write (marked
            # in flight) is checked by read before it is sent again.
            log.exception("%s: processing write %s failed", self.worker_id, write.uid)
            self.stats.by_label["error"] += 1
            return None
        finally:
            if not connection.in_atomic_block:
                close_old_connections()

    # -- recording outcomes ------------------------------------------------------------------------

    def _settle_finished(self, results: list[Result | None]) -> None:
        """Records the outcomes of the writes finished in this turn together: one transaction, one
        attempts INSERT, one chain lock. A write whose lease was taken over meanwhile gets nothing (its
        new holder decides). A database error leaves every write of the batch to the ledger
        (`_forget_unrecorded`); any other error retries the outcomes one by one, so one bad settlement
        cannot cost the others theirs."""
        results = [r for r in results if r is not None]
        for r in results:
            if r.settlement is None:
                self._count(r.label)
        pending = [r for r in results if r.settlement is not None]
        if not pending:
            return
        failed: set[int] = set()
        try:
            held = settle([r.settlement for r in pending], actor=self.worker_id)
        except DB_ERRORS:
            self._hand_back(pending)
            raise
        except Exception:
            log.exception("%s: recording %d outcomes together failed", self.worker_id, len(pending))
            held = self._settle_each(pending, failed)
        recorded = {id(s) for s in held}
        for r in pending:
            if id(r.settlement) in recorded:
                self._count(r.label)
            elif r.write.pk not in failed:
                log.warning(
                    "%s: lease on write %s was taken over before its outcome (%s) was recorded; "
                    "the new holder decides",
                    self.worker_id,
                    r.write.uid,
                    r.label,
                )
                self.stats.by_label["lease-lost"] += 1

    def _settle_each(self, pending: list[Result], failed: set[int]) -> list[Settlement]:
        held: list[Settlement] = []
        for i, r in enumerate(pending):
            try:
                held += settle([r.settlement], actor=self.worker_id)
            except DB_ERRORS:
                self._hand_back(pending[i:])
                raise
            except Exception:
                # As for a bug while processing: the lease lapses, and the write (marked in flight) is
                # checked by read before it is sent again.
                log.exception("%s: recording write %s failed", self.worker_id, r.write.uid)
                self.stats.by_label["error"] += 1
                failed.add(r.write.pk)
        return held

    def _hand_back(self, results: list[Result]) -> None:
        """Outcomes a database error kept from being recorded: the ledger still marks their writes in
        flight, so they are checked by read before anything is sent again (`_forget_unrecorded`)."""
        for r in results:
            self._note_unrecorded(r.write)
            self.stats.by_label["db-error"] += 1

    def _count(self, label: str) -> None:
        self.stats.processed += 1
        self.stats.by_label[label] += 1

    def run_once(self) -> WorkerStats:
        """One claim-process-settle cycle on the calling thread (tests)."""
        tenant_ids = self._tenant_ids()
        claimed = claim_due(
            self.worker_id,
            self.concurrency,
            holds=current_holds(tenant_ids),
            tenant_ids=tenant_ids,
            exclude_tenants=self._excluded_ids(),
        )
        reads = load_send_reads(claimed)
        self._settle_finished([self._run_one(write, reads) for write in claimed])
        return self.stats

    def drain(self, max_cycles: int = 1000) -> WorkerStats:
        """Runs cycles on the calling thread until nothing is due now (tests)."""
        for _ in range(max_cycles):
            before = self.stats.processed + self.stats.by_label["error"]
            self.run_once()
            if self.stats.processed + self.stats.by_label["error"] == before:
                break
        return self.stats
