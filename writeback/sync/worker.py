"""The sync worker loop: claim due writes in batches, process them on a thread pool, repeat.

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

from django.conf import settings
from django.db import close_old_connections, connection

from adapters.base import VendorAdapter
from writeback.models import Tenant, Write
from writeback.services import counts
from writeback.services.bulk import bulk_process_due
from writeback.services.targets import adapter_for
from writeback.states import InvalidTransition
from writeback.sync.claim import claim_due, has_open_work, lapsed_in_flight, renew_leases
from writeback.sync.holds import current_holds
from writeback.sync.process import Result, WriteProcessor

# The ledger counts' delta rows are folded this often (the counts are exact between foldings too).
COMPACT_EVERY_SECONDS = 30.0

log = logging.getLogger(__name__)


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
        self._last_compaction = 0.0
        # Leases are renewed three times per lease length while a write is in flight.
        self._renew_every = max(0.1, settings.WRITEBACK_LEASE_SECONDS / 3)
        self._last_renewal = time.monotonic()

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
        tenant_ids, excluded = self._tenant_ids(), self._excluded_ids()
        caps = dict(Tenant.objects.values_list("pk", "max_concurrency"))
        inflight: dict[Future, Write] = {}
        per_tenant: Counter = Counter()
        sleep = self.idle_sleep
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="sync") as pool:
            while not self.stopping.is_set():
                self._housekeeping()
                free = self.concurrency - len(inflight)
                if self.max_writes is not None:
                    free = min(free, self.max_writes - self._claimed)
                claimed = []
                # Claim in batches (one claim costs about as much for 1 write as for 8): wait until
                # half the threads are free, unless nothing is in flight.
                if free > 0 and (free >= self.batch or not inflight):
                    full = [t for t, n in per_tenant.items() if n >= caps.get(t, 4)]
                    claimed = claim_due(
                        self.worker_id,
                        free,
                        holds=current_holds(tenant_ids),
                        tenant_ids=tenant_ids,
                        exclude_tenants=[*full, *excluded],
                    )
                    claimed = self._within_bulkheads(claimed, per_tenant, caps)
                for write in claimed:
                    self._claimed += 1
                    per_tenant[write.tenant_id] += 1
                    inflight[pool.submit(self._run_one, write)] = write
                if inflight:
                    done, _ = wait(
                        list(inflight),
                        timeout=min(0.5 if claimed else self.idle_sleep, self._renew_every),
                        return_when=FIRST_COMPLETED,
                    )
                    for fut in done:
                        per_tenant[inflight.pop(fut).tenant_id] -= 1
                    self._renew(inflight)
                    sleep = self.idle_sleep
                    continue
                if self.max_writes is not None and self._claimed >= self.max_writes:
                    break
                if not claimed:
                    if self.until_idle and not has_open_work(
                        holds=current_holds(tenant_ids), tenant_ids=tenant_ids, exclude_tenants=excluded
                    ):
                        break
                    self.stopping.wait(sleep)
                    sleep = min(sleep * 1.5, 5.0)  # back off while idle, wake fast when work appears
                    caps = dict(Tenant.objects.values_list("pk", "max_concurrency"))
            # Stopping (SIGTERM, --max-writes): finish what is in flight, keeping its leases alive.
            while inflight:
                done, _ = wait(list(inflight), timeout=self._renew_every, return_when=FIRST_COMPLETED)
                for fut in done:
                    inflight.pop(fut)
                self._renew(inflight)
        close_old_connections()
        return self.stats

    def _renew(self, inflight: dict[Future, Write]) -> None:
        now = time.monotonic()
        if not inflight or now - self._last_renewal < self._renew_every:
            return
        self._last_renewal = now
        try:
            renew_leases(self.worker_id, [w.pk for w in inflight.values()])
        except Exception:
            # The database may be away for a moment: the next beat tries again; a lease that lapses
            # meanwhile is handled like a dead worker's (check by read before any resend).
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
            for write in lapsed_in_flight():
                # InvalidTransition: taken over meanwhile, and the new holder records it.
                with contextlib.suppress(InvalidTransition):
                    self.processor.record.lost(write, previous_owner=write.lease_owner)
        except Exception:
            log.exception("%s: marking lapsed leases failed", self.worker_id)
        try:
            bulk_process_due()
        except Exception:
            log.exception("%s: bulk replay step failed", self.worker_id)
        now = time.monotonic()
        if now - self._last_compaction >= COMPACT_EVERY_SECONDS:
            self._last_compaction = now
            try:
                counts.compact()
            except Exception:
                log.exception("%s: folding the ledger counts failed", self.worker_id)

    def _within_bulkheads(self, claimed, per_tenant: Counter, caps: dict) -> list:
        """A batch may hold more of one tenant than its cap allows: give the excess back at once."""
        from writeback.sync.claim import release

        keep, counts = [], Counter(per_tenant)
        for write in claimed:
            if counts[write.tenant_id] >= caps.get(write.tenant_id, 4):
                release(write)
                continue
            counts[write.tenant_id] += 1
            keep.append(write)
        return keep

    def _run_one(self, write) -> Result | None:
        try:
            result = self.processor.process(write)
            self.stats.processed += 1
            self.stats.by_label[result.label] += 1
            return result
        except Exception:
            # A bug must not kill the worker or lose the write: the lease lapses and the write (marked
            # in flight) is checked by read before it is sent again.
            log.exception("%s: processing write %s failed", self.worker_id, write.uid)
            self.stats.by_label["error"] += 1
            return None
        finally:
            if not connection.in_atomic_block:
                close_old_connections()

    def run_once(self) -> WorkerStats:
        """One claim-and-process cycle on the calling thread (tests)."""
        tenant_ids = self._tenant_ids()
        for write in claim_due(
            self.worker_id,
            self.concurrency,
            holds=current_holds(tenant_ids),
            tenant_ids=tenant_ids,
            exclude_tenants=self._excluded_ids(),
        ):
            self._run_one(write)
        return self.stats

    def drain(self, max_cycles: int = 1000) -> WorkerStats:
        """Runs cycles on the calling thread until nothing is due now (tests)."""
        for _ in range(max_cycles):
            before = self.stats.processed + self.stats.by_label["error"]
            self.run_once()
            if self.stats.processed + self.stats.by_label["error"] == before:
                break
        return self.stats
