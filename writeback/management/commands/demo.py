from django.core.management.base import BaseCommand, CommandError

from writeback import demo, deploy


class Command(BaseCommand):
    help = "Runs the product on this machine: EHR simulators, demo tenants and people, a worker, the console."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sim-port", type=int, default=8101, help="first of four simulator ports")
        parser.add_argument(
            "--traffic-every", type=float, default=4.0, help="seconds between demo events (0 = no trickle)"
        )
        parser.add_argument(
            "--i-know-this-is-not-production",
            action="store_true",
            dest="not_production",
            help="run against a database other than a local SQLite file anyway",
        )

    def handle(self, *args, **opts):
        problem = demo.database_problem()
        if problem and not opts["not_production"]:
            raise CommandError(
                f"demo refuses to run: {problem}. It creates users whose password is 'demo', points its "
                "tenants at local EHR simulators and prints an API token. Run it against a local SQLite "
                "file (unset DATABASE_URL), or pass --i-know-this-is-not-production for a throwaway database."
            )
        deploy.allow_development_key()  # Django's development server, this machine, SQLite only
        demo.run(
            host=opts["host"],
            port=opts["port"],
            sim_port=opts["sim_port"],
            traffic_every=opts["traffic_every"],
            out=self.stdout,
        )
