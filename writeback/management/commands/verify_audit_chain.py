from django.core.management.base import BaseCommand, CommandError

from writeback.services.audit import verify_chain


class Command(BaseCommand):
    help = "Verifies the audit trail's hash chain; exits 1 naming the first broken entry."

    def handle(self, *args, **opts):
        report = verify_chain()
        if not report.ok:
            raise CommandError(str(report))
        self.stdout.write(str(report))
