from django.core.management.base import BaseCommand, CommandError

from writeback.models import Tenant
from writeback.services.discovery import capabilities_discover


class Command(BaseCommand):
    help = (
        "Reads a tenant's /metadata (CapabilityStatement) and records what it declares as discovered "
        "capabilities. Manual capabilities are never changed: discovery can narrow, never widen."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the tenant")

    def handle(self, *args, **opts):
        tenant = Tenant.objects.filter(slug=opts["slug"]).first()
        if tenant is None:
            raise CommandError(f"unknown tenant {opts['slug']!r}")
        report = capabilities_discover(tenant=tenant, actor="command:discover_capabilities")
        if report.ok:
            self.stdout.write(self.style.SUCCESS(f"Discovered {report}"))
        else:
            # Recorded on the tenant and in the audit trail; the manual registry still governs writes.
            message = f"Discovery failed for {tenant.slug}: {report.error}"
            self.stdout.write(self.style.WARNING(f"{message} (recorded; manual capabilities unchanged)"))
