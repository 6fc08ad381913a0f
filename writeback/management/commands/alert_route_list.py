from django.core.management.base import BaseCommand

from writeback.models import AlertRoute


class Command(BaseCommand):
    help = "Lists the alert routes (removed ones with --all)."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="include removed routes")

    def handle(self, *args, **opts):
        routes = AlertRoute.objects.select_related("tenant").order_by("name", "created_at")
        if not opts["all"]:
            routes = routes.filter(removed_at__isnull=True)
        if not routes:
            self.stdout.write("No alert routes.")
            return
        for r in routes:
            flags = [r.kind, f"{r.min_severity}+", r.tenant.slug if r.tenant else "all tenants"]
            if r.escalation:
                flags.append("escalation")
            if r.removed_at:
                flags.append(f"removed {r.removed_at:%Y-%m-%d %H:%M}")
            self.stdout.write(f"{r.name}\t{r.target}\t{' · '.join(flags)}")
