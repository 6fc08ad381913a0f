"""Token buckets in the database: a limit that holds across every web process and host.

A bucket holds up to `capacity` tokens and refills at `capacity` per `per_seconds`; each action takes one.
The bucket row is locked while it is read and written, so two requests at once cannot both take the last
token.
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from writeback.models import RateBucket


def rate_take(key: str, *, capacity: int, per_seconds: float) -> float:
    """Takes one token from `key`'s bucket: 0.0 when taken, else the seconds until one will be there.
    A capacity below 1 means no limit."""
    if capacity < 1:
        return 0.0
    rate = capacity / per_seconds
    now = timezone.now()
    with transaction.atomic():
        bucket = RateBucket.objects.select_for_update().filter(key=key).first()
        if bucket is None:
            try:
                with transaction.atomic():
                    RateBucket.objects.create(key=key, tokens=capacity - 1, updated_at=now)
                return 0.0
            except IntegrityError:  # created by a concurrent request meanwhile: use that one
                bucket = RateBucket.objects.select_for_update().get(key=key)
        elapsed = max(0.0, (now - bucket.updated_at).total_seconds())
        tokens = min(float(capacity), bucket.tokens + elapsed * rate)
        if tokens < 1:
            RateBucket.objects.filter(pk=bucket.pk).update(tokens=tokens, updated_at=now)
            return (1 - tokens) / rate
        RateBucket.objects.filter(pk=bucket.pk).update(tokens=tokens - 1, updated_at=now)
        return 0.0
