from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.models import Tenant
from writeback.services.reconcile import reconcile_tenant
from writeback.services.restore import mark_for_verification, parse_instant, write_marker

ACTOR = "command:recover_after_restore"


class Command(BaseCommand):
    help = (
        "The first step after restoring the database (docs/recovery.md): marks every write that may have "
        "been sent after the backup point as verify-before-sending (the worker looks it up at the EHR "
        "first), then sweeps the window for differences between the ledger and the EHR."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="only this tenant (slug); default: every tenant")
        parser.add_argument("--since", help="the backup point, ISO 8601: start of the reconciliation window")
        parser.add_argument("--no-sweep", action="store_true", help="mark only; reconcile later")

    def handle(self, *args, **opts):
        tenant = None
        if opts["tenant"]:
            tenant = Tenant.objects.filter(slug=opts["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant {opts['tenant']!r}")
        try:
            since = parse_instant(opts["since"], "since")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        counts = mark_for_verification(tenant=tenant, actor=ACTOR, reason="recover_after_restore")
        for slug, marked in counts.items():
            self.stdout.write(f"{slug}: {marked} write(s) marked verify-before-sending")
        # The restored database is the new generation: workers must not take it for another restore.
        write_marker()
        if opts["no_sweep"]:
            return
        for t in [tenant] if tenant else Tenant.objects.all():
            try:
                run = reconcile_tenant(t, since=since, actor=ACTOR)
            except DomainError as exc:
                raise CommandError(str(exc)) from None
            counts_text = ", ".join(f"{k}={v}" for k, v in run.counts.items())
            self.stdout.write(f"{t.slug}: reconciliation {run.status}; {counts_text}")
