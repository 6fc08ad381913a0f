from django.core.management.base import BaseCommand, CommandError

from writeback.models import Tenant
from writeback.services.retention import purge_payloads


class Command(BaseCommand):
    help = (
        "Blanks PHI payload bodies (event payloads, write resources, attempts' response bodies, conflict "
        "snapshots) of settled writes older than each tenant's retention period. Every hash is kept, so "
        "verify_audit_chain still passes; open writes are never touched; tenants without a retention "
        "period are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (slug); default: every tenant with a period")
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be purged; change nothing"
        )

    def handle(self, *args, **opts):
        tenant = None
        if opts["tenant"]:
            tenant = Tenant.objects.filter(slug=opts["tenant"]).first()
            if tenant is None:
                raise CommandError(f"unknown tenant {opts['tenant']!r}")
            if tenant.retention_days is None:
                raise CommandError(f"tenant {tenant.slug} has no retention period: nothing is ever purged")
        for report in purge_payloads(tenant=tenant, dry_run=opts["dry_run"]):
            self.stdout.write(str(report))
