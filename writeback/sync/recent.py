"""What the second check reads for every write, kept for a moment per worker process.

Holds (kill switches, alert holds, paused tenants) and a tenant's contract and capabilities change
rarely but are read for every write; reading them once a second instead of once a write saves five
queries per write. A change takes effect for writes already claimed within `ttl` seconds; claims always
read holds fresh, and the tenant row (its mode) is read with each claim (`claim_due` selects it).
"""

import threading
import time
from collections.abc import Callable

from writeback.models import Tenant
from writeback.services.contract import TenantContract
from writeback.services.holds import Holds, current_holds


class Recent[T]:
    def __init__(self, load: Callable[[], T], ttl: float) -> None:
        self._load, self._ttl = load, ttl
        self._value: T | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> T:
        now = time.monotonic()
        with self._lock:
            if self._value is not None and now - self._at < self._ttl:
                return self._value
        value = self._load()  # outside the lock: a slow read must not queue the other threads
        with self._lock:
            self._value, self._at = value, now
        return value


class RecentHolds(Recent[Holds]):
    def __init__(self, ttl: float = 1.0) -> None:
        super().__init__(current_holds, ttl)


class RecentContracts:
    """One TenantContract per tenant, reloaded after `ttl` seconds or when the tenant row changed."""

    def __init__(self, ttl: float = 1.0) -> None:
        self._ttl = ttl
        self._by_tenant: dict[int, tuple[object, Recent[TenantContract]]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: Tenant) -> TenantContract:
        with self._lock:
            entry = self._by_tenant.get(tenant.pk)
            if entry is None or entry[0] != tenant.updated_at:
                entry = (tenant.updated_at, Recent(lambda: TenantContract.load(tenant), self._ttl))
                self._by_tenant[tenant.pk] = entry
        return entry[1].get()
