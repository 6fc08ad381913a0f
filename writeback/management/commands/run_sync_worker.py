from django.core.management.base import BaseCommand, CommandError

from writeback.sync.worker import SyncWorker


class Command(BaseCommand):
    help = "Sends due writes to their EHRs. Run several (on several hosts) against one PostgreSQL to scale."

    def add_arguments(self, parser):
        parser.add_argument(
            "--tenant", action="append", metavar="SLUG", help="only these tenants (repeatable)"
        )
        parser.add_argument(
            "--exclude-tenant",
            action="append",
            metavar="SLUG",
            help="all tenants but these (repeatable): a shared pool beside per-tenant shards",
        )
        parser.add_argument("--concurrency", type=int, default=None, help="worker threads (default 8)")
        parser.add_argument("--until-idle", action="store_true", help="exit 0 once nothing is left to send")
        parser.add_argument(
            "--max-writes", type=int, default=None, help="exit after claiming this many writes"
        )

    def handle(self, *args, **opts):
        if opts["concurrency"] is not None and opts["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        if opts["tenant"] and opts["exclude_tenant"]:
            raise CommandError("use --tenant or --exclude-tenant, not both")
        worker = SyncWorker(
            concurrency=opts["concurrency"],
            tenant_slugs=opts["tenant"],
            exclude_slugs=opts["exclude_tenant"],
            until_idle=opts["until_idle"],
            max_writes=opts["max_writes"],
        )
        worker.install_signal_handlers()
        self.stdout.write(f"{worker.worker_id}: started (concurrency {worker.concurrency})")
        try:
            stats = worker.run()
        except ValueError as exc:
            raise CommandError(str(exc))
        summary = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_label.items())) or "nothing to do"
        if stats.db_outages:
            summary += (
                f"; rode out {stats.db_outages} database outage(s), {stats.unrecorded} write(s) "
                "handed back to be checked by read"
            )
        self.stdout.write(f"{worker.worker_id}: stopped after {stats.processed} writes ({summary})")
