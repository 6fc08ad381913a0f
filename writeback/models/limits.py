"""Rate limits: one token bucket per key, shared by every process through the database."""

from django.db import models


class RateBucket(models.Model):
    """`tokens` as of `updated_at`; refills continuously up to the limit's capacity (see
    `writeback.services.ratelimits`). Keys name who and what, e.g. `ehr-read:user:42`."""

    key = models.CharField(max_length=128, unique=True)
    tokens = models.FloatField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key}: {self.tokens:.2f}"
