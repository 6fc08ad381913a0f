from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from writeback.errors import DomainError
from writeback.models import Tenant, TenantMode, Vendor
from writeback.services.tenants import tenant_create, tenant_set_consent_policy


class Command(BaseCommand):
    help = "Creates a tenant (one EHR deployment) and its capability registry from the vendor's adapter."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--vendor", required=True, choices=Vendor.values)
        parser.add_argument("--base-url", required=True, help="the FHIR R4 base URL")
        parser.add_argument("--auth", default="none", choices=Tenant.AuthMode.values)
        parser.add_argument("--mode", default=TenantMode.LIVE, choices=TenantMode.values)
        parser.add_argument("--name", default="")
        parser.add_argument("--client-id", default="")
        parser.add_argument("--token-url", default="")
        parser.add_argument(
            "--private-key-ref", default="", help="PEM file path or env:VARNAME (never the key)"
        )
        parser.add_argument(
            "--setting",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="vendor context, e.g. practice_id=195900 (repeatable)",
        )
        parser.add_argument(
            "--consent-waived",
            action="append",
            default=[],
            metavar="RESOURCE_TYPE",
            help="write this resource type without a patient consent on file (repeatable; audited)",
        )
        parser.add_argument(
            "--no-consent-required",
            action="store_true",
            help="waive the consent requirement for every resource type (audited)",
        )
        parser.add_argument(
            "--test",
            action="store_true",
            help="a test environment: live tenants of its vendor may replay writes and events into it",
        )
        parser.add_argument("--consent-reason", default="", help="why consent is waived (required to waive)")

    def handle(self, *args, **opts):
        if Tenant.objects.filter(slug=opts["slug"]).exists():
            raise CommandError(f"tenant {opts['slug']!r} already exists")
        settings = {}
        for item in opts["setting"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--setting expects KEY=VALUE, got {item!r}")
            settings[key] = value
        if opts["auth"] == "smart" and not (
            opts["client_id"] and opts["token_url"] and opts["private_key_ref"]
        ):
            raise CommandError("--auth smart needs --client-id, --token-url and --private-key-ref")
        try:
            with transaction.atomic():
                tenant = self._create(opts, settings)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()))
        except DomainError as exc:
            raise CommandError(f"{exc.path}: {exc}" if exc.path else str(exc))
        enabled = tenant.capabilities.filter(source="manual", allowed=True).count()
        self.stdout.write(
            f"created tenant {tenant.slug} ({tenant.get_vendor_display()}, {tenant.mode})"
            f" -> {tenant.base_url}; {enabled} capabilities enabled"
        )
        if not tenant.consent_required or tenant.consent_waived_resource_types:
            waived = ", ".join(tenant.consent_waived_resource_types) or "-"
            self.stdout.write(f"consent required: {tenant.consent_required}; waived for: {waived}")

    @staticmethod
    def _create(opts: dict, settings: dict) -> Tenant:
        actor = "command:create_tenant"
        tenant = tenant_create(
            slug=opts["slug"],
            vendor=opts["vendor"],
            base_url=opts["base_url"],
            mode=opts["mode"],
            auth_mode=opts["auth"],
            name=opts["name"],
            settings=settings,
            client_id=opts["client_id"],
            token_url=opts["token_url"],
            private_key_ref=opts["private_key_ref"],
            is_test=opts["test"],
            actor=actor,
        )
        if opts["consent_waived"] or opts["no_consent_required"]:
            tenant_set_consent_policy(
                tenant,
                required=not opts["no_consent_required"],
                waived_resource_types=opts["consent_waived"],
                actor=actor,
                reason=opts["consent_reason"],
            )
        return tenant
