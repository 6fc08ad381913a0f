from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.models import Tenant
from writeback.services.alerts import escalation_minutes
from writeback.services.thresholds import tenant_thresholds, thresholds_set

ACTOR = "command:alert_thresholds"


class Command(BaseCommand):
    help = (
        "Shows a tenant's alert thresholds, or sets some: --set conflict_rate=0.1 --set queue_depth=2000 "
        "(KEY=default removes an override; a limit of 0 turns its alert off)."
    )

    def add_arguments(self, parser):
        parser.add_argument("tenant", metavar="SLUG")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    def handle(self, *args, **opts):
        tenant = Tenant.objects.filter(slug=opts["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {opts['tenant']!r}")
        changes = {}
        for item in opts["set"]:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--set expects KEY=VALUE, got {item!r}")
            changes[key.strip()] = value.strip()
        if changes:
            try:
                thresholds_set(tenant=tenant, changes=changes, actor=ACTOR)
            except DomainError as exc:
                raise CommandError(str(exc)) from exc
        overrides = (tenant.settings or {}).get("alerts", {})
        effective = {**tenant_thresholds(tenant), "escalation_minutes": escalation_minutes(tenant)}
        for key, value in sorted(effective.items()):
            origin = "tenant" if key in overrides else "default"
            self.stdout.write(f"{key}\t{value}\t({origin})")
