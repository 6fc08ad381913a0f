from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.models import Tenant
from writeback.services.reconcile import reconcile_tenant
from writeback.services.restore import parse_instant

ACTOR = "command:reconcile_tenant"


class Command(BaseCommand):
    help = (
        "Sweeps a tenant's EHR for resources carrying our identifier system and compares them with the "
        "ledger: orphans, missing writes and drift become findings on the console's reconciliation page."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the tenant's slug")
        parser.add_argument("--since", help="window start, ISO 8601 (EHR resources last updated since then)")
        parser.add_argument("--until", help="window end, ISO 8601 (ledger writes created until then)")
        parser.add_argument("--page-size", type=int, default=None, help="resources per search page (_count)")

    def handle(self, *args, **opts):
        tenant = Tenant.objects.filter(slug=opts["slug"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {opts['slug']!r}")
        if opts["page_size"] is not None and not 1 <= opts["page_size"] <= 1000:
            raise CommandError("--page-size must be between 1 and 1000")
        try:
            since, until = parse_instant(opts["since"], "since"), parse_instant(opts["until"], "until")
            run = reconcile_tenant(tenant, since=since, until=until, actor=ACTOR, page_size=opts["page_size"])
        except (ValueError, DomainError) as exc:
            raise CommandError(str(exc)) from None
        counts = ", ".join(f"{k}={v}" for k, v in run.counts.items())
        self.stdout.write(
            f"reconciliation {run.uid} of {tenant.slug}: {run.status}; {run.requests} request(s), "
            f"{run.resources_seen} resource(s) seen; {counts}"
        )
        if run.message:
            self.stdout.write(run.message)
