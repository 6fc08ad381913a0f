"""Builds what an adapter knows about a tenant (TargetConfig) from the Tenant row and its capabilities."""

from django.conf import settings

from adapters.base import TargetConfig
from adapters.registry import get_adapter
from writeback.models import Capability, Tenant


def conditional_create_registry(tenant: Tenant) -> dict[str, bool]:
    """Per resource type, whether conditional create is confirmed (True) or refused (False), from the
    `conditional_create` Capability rows. A refusal from either source wins, as everywhere in the
    registry (discovery may narrow what an engineer set, never widen it); types with no row are absent."""
    verdicts: dict[str, bool] = {}
    rows = Capability.objects.filter(tenant=tenant, operation="conditional_create").values_list(
        "resource_type", "allowed"
    )
    for resource_type, allowed in rows:
        verdicts[resource_type] = verdicts.get(resource_type, True) and allowed
    return verdicts


def target_config_for(tenant: Tenant, enabled: frozenset[tuple[str, str]] | None = None) -> TargetConfig:
    """The tenant as its adapter sees it. Given `enabled`, a stub for checks that send nothing (intake's
    preflight): the registry is not read."""
    conditional: dict[str, bool] = {}
    if enabled is None:
        enabled = frozenset(
            Capability.objects.filter(
                tenant=tenant, source=Capability.Source.MANUAL, allowed=True
            ).values_list("resource_type", "operation")
        )
        conditional = conditional_create_registry(tenant)
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
        conditional_create=conditional,
        connect_timeout=settings.WRITEBACK_HTTP_CONNECT_TIMEOUT,
        read_timeout=settings.WRITEBACK_HTTP_READ_TIMEOUT,
    )


def adapter_for(tenant: Tenant):
    return get_adapter(target_config_for(tenant))
