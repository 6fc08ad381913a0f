"""What must not be sent right now: paused tenants, kill switches at each level, and queues held by an
unacknowledged very-high-risk alert. Read once per claim cycle, and again for each write just before
it is sent (the second check)."""

from dataclasses import dataclass, field

from django.db.models import Q

from writeback.models import Alert, KillSwitch, Tenant, TenantMode, Write


@dataclass
class Holds:
    everything: str = ""  # behaviour of an active global switch ("hold" / "drain"), "" when none
    tenants: dict[int, str] = field(default_factory=dict)  # tenant id -> behaviour
    resource_types: dict[tuple[int, str], str] = field(default_factory=dict)
    streams: dict[str, str] = field(default_factory=dict)  # stream key -> behaviour
    reasons: dict[str, str] = field(default_factory=dict)

    def exclusion(self) -> Q:
        """Writes under any hold, as a Q to exclude from the claim query."""
        q = Q(pk__in=[])
        if self.tenants:
            q |= Q(tenant_id__in=list(self.tenants))
        for tenant_id, resource_type in self.resource_types:
            q |= Q(tenant_id=tenant_id, resource_type=resource_type)
        if self.streams:
            q |= Q(stream_key__in=list(self.streams))
        return q

    def behaviour_for(self, write: Write) -> str:
        """ "hold", "drain" or "" for one write (the strictest that applies)."""
        found = [
            self.everything,
            self.tenants.get(write.tenant_id, ""),
            self.resource_types.get((write.tenant_id, write.resource_type), ""),
            self.streams.get(write.stream_key, ""),
        ]
        if "hold" in found:
            return "hold"
        return "drain" if "drain" in found else ""


def _merge(target: dict, key, behaviour: str) -> None:
    if target.get(key) != "hold":
        target[key] = behaviour


def current_holds(tenant_ids: list[int] | None = None) -> Holds:
    holds = Holds()
    paused = Tenant.objects.filter(mode=TenantMode.PAUSED)
    if tenant_ids is not None:
        paused = paused.filter(pk__in=tenant_ids)
    for pk in paused.values_list("pk", flat=True):
        holds.tenants[pk] = "hold"
    for switch in KillSwitch.objects.filter(released_at__isnull=True):
        if switch.scope == KillSwitch.Scope.GLOBAL:
            if holds.everything != "hold":
                holds.everything = switch.behaviour
        elif switch.scope == KillSwitch.Scope.TENANT:
            _merge(holds.tenants, switch.tenant_id, switch.behaviour)
        elif switch.scope == KillSwitch.Scope.RESOURCE_TYPE:
            _merge(holds.resource_types, (switch.tenant_id, switch.resource_type), switch.behaviour)
        elif switch.scope == KillSwitch.Scope.STREAM:
            key = Write.make_stream_key(switch.tenant_id, switch.patient_ref, switch.resource_type)
            _merge(holds.streams, key, switch.behaviour)
    for tenant_id, resource_type in Alert.objects.filter(
        holds_queue=True, acknowledged_at__isnull=True
    ).values_list("tenant_id", "resource_type"):
        holds.resource_types[(tenant_id, resource_type)] = "hold"
    return holds
