from django.core.management.base import BaseCommand, CommandError

from writeback.errors import DomainError
from writeback.services.alert_delivery import route_remove

ACTOR = "command:alert_route_remove"


class Command(BaseCommand):
    help = "Removes an alert route: it receives nothing more; its delivery log is kept."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, **opts):
        try:
            route = route_remove(name=opts["name"], actor=ACTOR)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Route {route.name} removed.")
