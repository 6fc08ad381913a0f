"""Builds what an adapter knows about a tenant (TargetConfig) from the Tenant row and its capabilities."""

from django.conf import settings

from adapters.base import TargetConfig
from adapters.registry import get_adapter
from writeback.models import Capability, Tenant


def target_config_for(tenant: Tenant, enabled: frozenset[tuple[str, str]] | None = None) -> TargetConfig:
    if enabled is None:
        enabled = frozenset(
            Capability.objects.filter(
                tenant=tenant, source=Capability.Source.MANUAL, allowed=True
            ).values_list("resource_type", "operation")
        )
    return TargetConfig(
        slug=tenant.slug,
        vendor=tenant.vendor,
        base_url=tenant.base_url,
        identifier_system=settings.WRITEBACK_IDENTIFIER_SYSTEM,
        auth_mode=tenant.auth_mode,
        client_id=tenant.client_id,
        token_url=tenant.token_url,
        private_key_ref=tenant.private_key_ref,
        key_id=tenant.key_id,
        scope_style=tenant.scope_style,
        settings=dict(tenant.settings or {}),
        enabled=enabled,
        connect_timeout=settings.WRITEBACK_HTTP_CONNECT_TIMEOUT,
        read_timeout=settings.WRITEBACK_HTTP_READ_TIMEOUT,
    )


def adapter_for(tenant: Tenant):
    return get_adapter(target_config_for(tenant))
