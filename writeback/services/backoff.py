"""When to try again: exponential backoff with jitter, never sooner than the target's Retry-After."""

import random
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone


def retry_delay(attempts: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds until the next try after `attempts` tries: base * 2^(attempts-1), capped, with "equal
    jitter" (half fixed, half random) so a burst of failures does not come back as a burst."""
    rng = rng or random
    base = settings.WRITEBACK_BACKOFF_BASE_SECONDS
    cap = settings.WRITEBACK_BACKOFF_CAP_SECONDS
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    delay = delay / 2 + rng.uniform(0, delay / 2)
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), cap))
    return delay


def next_attempt_at(attempts: int, retry_after: float | None = None) -> datetime:
    return timezone.now() + timedelta(seconds=retry_delay(attempts, retry_after))


def reconnect_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds a worker waits before its next try after `failures` database errors in a row: the same
    capped exponential with equal jitter, so workers that lost the database together do not all knock
    on the restarted server in the same instant."""
    rng = rng or random
    base = settings.WRITEBACK_DB_RECONNECT_BASE_SECONDS
    cap = settings.WRITEBACK_DB_RECONNECT_CAP_SECONDS
    delay = min(cap, base * (2 ** max(0, failures - 1)))
    return delay / 2 + rng.uniform(0, delay / 2)
