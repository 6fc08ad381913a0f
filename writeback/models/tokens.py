"""API tokens. Only a SHA-256 of the key is stored; the key is shown once, when it is made."""

import hashlib
import secrets

from django.conf import settings
from django.db import models

from writeback.models.tenants import Tenant

PREFIX_LENGTH = 8


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    # The tenants this token may act on (always also limited to the user's own tenant grants).
    tenants = models.ManyToManyField(Tenant, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}... ({self.user})"

    @classmethod
    def generate_key(cls) -> str:
        return secrets.token_urlsafe(32)
