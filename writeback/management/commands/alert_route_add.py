from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.models import Severity, Tenant
from writeback.services.alert_delivery import SIGNATURE_HEADER, route_add

ACTOR = "command:alert_route_add"


class Command(BaseCommand):
    help = (
        "Adds an alert route: a webhook (JSON, signed) or an email address, for one tenant or all, from a "
        "minimum severity. A webhook's signing secret is printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="a unique name (letters, digits, - and _)")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--webhook", metavar="URL", default="")
        target.add_argument("--email", metavar="ADDRESS", default="")
        parser.add_argument("--tenant", metavar="SLUG", default="", help="only this tenant's alerts")
        parser.add_argument("--min-severity", default=Severity.WARNING, choices=Severity.values)
        parser.add_argument(
            "--escalation",
            action="store_true",
            help="an escalation route: receives only page alerts nobody acknowledged in time",
        )

    def handle(self, *args, **opts):
        tenant = None
        if opts["tenant"]:
            tenant = Tenant.objects.filter(slug=opts["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant {opts['tenant']!r}")
        try:
            route, secret = route_add(
                name=opts["name"],
                actor=ACTOR,
                webhook=opts["webhook"],
                email=opts["email"],
                tenant=tenant,
                min_severity=opts["min_severity"],
                escalation=opts["escalation"],
            )
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        scope = tenant.slug if tenant else "all tenants"
        self.stdout.write(
            f"Route {route.name}: {route.kind} to {route.target} ({scope}, {route.min_severity}+)"
        )
        if secret:
            self.stdout.write(
                f"Signing secret (shown once; the receiver checks {SIGNATURE_HEADER}: "
                f"sha256=HMAC-SHA256(secret, body)):\n{secret}"
            )
