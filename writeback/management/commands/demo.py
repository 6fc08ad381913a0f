from django.core.management.base import BaseCommand

from writeback import demo


class Command(BaseCommand):
    help = "Runs the product on this machine: EHR simulators, demo tenants and people, a worker, the console."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sim-port", type=int, default=8101, help="first of four simulator ports")
        parser.add_argument(
            "--traffic-every", type=float, default=4.0, help="seconds between demo events (0 = no trickle)"
        )

    def handle(self, *args, **opts):
        demo.run(
            host=opts["host"],
            port=opts["port"],
            sim_port=opts["sim_port"],
            traffic_every=opts["traffic_every"],
            out=self.stdout,
        )
