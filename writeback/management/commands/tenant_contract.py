from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.models import ContractOverrideChange, Tenant
from writeback.services.permissions import ActionRefused
from writeback.services.policy import (
    CHECKLIST,
    override_approve,
    override_reject,
    override_request,
    tenant_policy,
)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


class Command(BaseCommand):
    help = (
        "Shows or changes a tenant's policy (its overrides of contract rows). Narrowing (require approval, "
        "raise risk, fewer operations or fields) applies at once; widening waits for a second integration "
        "engineer: --approve UID with --checklist " + ",".join(CHECKLIST) + "."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the tenant")
        parser.add_argument("--by", help="the integration engineer acting (username)")
        parser.add_argument("--resource-type", help="the contract row to override")
        approval = parser.add_mutually_exclusive_group()
        approval.add_argument("--require-approval", action="store_true", default=None)
        approval.add_argument("--no-approval", action="store_true", help="widens: needs a second engineer")
        parser.add_argument("--risk", help="low, medium, high or very_high")
        parser.add_argument("--operations", help="comma-separated, within the contract row's")
        parser.add_argument("--fields", help="writable fields, comma-separated, within the contract row's")
        parser.add_argument("--reason", default="", help="why (required for a change or a rejection)")
        parser.add_argument("--approve", metavar="UID", help="approve a pending widening")
        parser.add_argument("--reject", metavar="UID", help="turn a pending widening down")
        parser.add_argument("--checklist", help="reviewed items, comma-separated: " + ",".join(CHECKLIST))

    def handle(self, *args, **opts):
        tenant = Tenant.objects.filter(slug=opts["slug"]).first()
        if tenant is None:
            raise CommandError(f"unknown tenant {opts['slug']!r}")
        if not (opts["resource_type"] or opts["approve"] or opts["reject"]):
            for row in tenant_policy(tenant):
                self.stdout.write(f"{row['resource_type']}: {row['row']} ({row['version']})")
            return
        user = get_user_model().objects.filter(username=opts["by"] or "").first()
        if user is None:
            raise CommandError("--by must name an existing integration engineer")
        try:
            self._act(tenant, user, opts)
        except (DomainError, ActionRefused) as exc:
            raise CommandError(str(exc)) from None

    def _act(self, tenant: Tenant, user, opts: dict) -> None:
        if opts["approve"] or opts["reject"]:
            uid = opts["approve"] or opts["reject"]
            try:
                change = ContractOverrideChange.objects.select_related("tenant").get(tenant=tenant, uid=uid)
            except (ContractOverrideChange.DoesNotExist, ValidationError):
                raise CommandError(f"no policy change {uid!r} for {tenant.slug}") from None
            if opts["approve"]:
                override_approve(
                    change=change, user=user, checklist=_csv(opts["checklist"]) or [], channel="command"
                )
                self.stdout.write(self.style.SUCCESS(f"Approved and applied: {change.after}"))
            else:
                override_reject(change=change, user=user, note=opts["reason"], channel="command")
                self.stdout.write(self.style.SUCCESS("Turned down. Nothing changed."))
            return
        approval = True if opts["require_approval"] else (False if opts["no_approval"] else None)
        change = override_request(
            tenant=tenant,
            user=user,
            resource_type=opts["resource_type"],
            note=opts["reason"],
            approval_required=approval,
            risk=opts["risk"],
            operations=_csv(opts["operations"]),
            writable_fields=_csv(opts["fields"]),
            channel="command",
        )
        if change.widens:
            self.stdout.write(
                self.style.WARNING(f"Requested {change.uid}: it widens; a second engineer must approve it.")
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"Applied at once: {change.after}"))
