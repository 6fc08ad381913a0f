"""Console-only state: what an operator chose for themselves (never clinical data)."""

from django.conf import settings
from django.db import models


class OperatorPreference(models.Model):
    """One operator's display preferences, kept across sign-ins."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_preference"
    )
    # An IANA zone name ("Europe/Paris"); checked against zoneinfo before it is stored.
    time_zone = models.CharField(max_length=64)
    # Set when the zone came from the browser rather than from the operator's own choice.
    detected = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "operator preference"

    def __str__(self) -> str:
        return f"{self.user} · {self.time_zone}"
