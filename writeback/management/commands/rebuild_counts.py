from django.core.management.base import BaseCommand

from writeback.services.counts import rebuild


class Command(BaseCommand):
    help = (
        "Recompute the ledger's running counts (writes per tenant x state x resource type, attempts and "
        "events per hour) from the ledger. Writers wait while it runs on PostgreSQL."
    )

    def handle(self, *args, **options) -> None:
        write_rows, hour_rows = rebuild()
        self.stdout.write(f"counts rebuilt: {write_rows} write count rows, {hour_rows} hourly rows")
