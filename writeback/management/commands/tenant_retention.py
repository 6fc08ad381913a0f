from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.models import Tenant
from writeback.services.permissions import ActionRefused
from writeback.services.retention import tenant_set_retention


class Command(BaseCommand):
    help = "Sets a tenant's retention period in days (or 'off'): purge_payloads purges what is older."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the tenant")
        parser.add_argument("days", help="days, or 'off'")
        parser.add_argument("--by", required=True, help="the integration engineer acting (username)")

    def handle(self, *args, **opts):
        tenant = Tenant.objects.filter(slug=opts["slug"]).first()
        if tenant is None:
            raise CommandError(f"unknown tenant {opts['slug']!r}")
        user = get_user_model().objects.filter(username=opts["by"]).first()
        if user is None:
            raise CommandError("--by must name an existing integration engineer")
        raw = opts["days"].strip().lower()
        if raw != "off" and not raw.isdigit():
            raise CommandError("days must be a whole number of days, or 'off'")
        try:
            tenant_set_retention(
                tenant=tenant, user=user, days=None if raw == "off" else int(raw), channel="command"
            )
        except (DomainError, ActionRefused) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"{tenant.slug}: retention {raw}"))
