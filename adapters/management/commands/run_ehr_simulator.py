"""`python manage.py run_ehr_simulator`: serves the EHR simulator until SIGINT/SIGTERM (docs/simulator.md)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from adapters.simulator import start_simulator
from adapters.simulator.profiles import PROFILES
from adapters.simulator.seed import SEEDS


class Command(BaseCommand):
    help = "Runs the EHR simulator: an HTTP server behaving like Epic, athena, Veradigm or a generic FHIR R4."
    requires_system_checks: list[str] = []  # needs no database; starts fast for tests and the demo
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8081, help="0 picks a free port (default 8081)")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--profile", choices=sorted(PROFILES), default="generic")
        parser.add_argument("--faults", default="", help='e.g. "error_5xx=0.1,rate_limit=0.05,seed=7"')
        parser.add_argument("--seed", choices=sorted(SEEDS), default="demo")
        parser.add_argument("--auth", choices=["none", "smart"], default="none")
        parser.add_argument(
            "--public-key",
            action="append",
            default=[],
            metavar="PEM_FILE",
            help="a client's public key (PEM) for SMART client assertions; repeatable",
        )
        parser.add_argument("--client-id", default="writeback-client")
        parser.add_argument(
            "--granted-scope",
            action="append",
            default=None,
            metavar="SCOPE",
            help="a scope the client registration holds (default: every scope); repeatable",
        )
        parser.add_argument("--tenant", default="CP00101", help="Veradigm tenant in the FHIR path")
        parser.add_argument("--practice-id", default="195900", help="athena practice id")
        parser.add_argument("--token-lifetime", type=int, default=300, help="access token lifetime, seconds")
        parser.add_argument(
            "--unity-user",
            action="append",
            default=[],
            metavar="NAME:PASSWORD",
            help="a Veradigm Unity account (default writeback:secret); repeatable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            keys = [Path(path).read_text() for path in options["public_key"]]
        except OSError as exc:
            raise CommandError(f"cannot read a public key: {exc}")
        unity_users = dict(user.partition(":")[::2] for user in options["unity_user"])
        if any(not name or not password for name, password in unity_users.items()):
            raise CommandError("--unity-user takes NAME:PASSWORD")
        if options["auth"] == "smart" and not keys:
            raise CommandError("--auth smart needs at least one --public-key")
        try:
            sim = start_simulator(
                options["profile"],
                host=options["host"],
                port=options["port"],
                faults=options["faults"] or None,
                seed=options["seed"],
                auth=options["auth"],
                public_keys=keys,
                client_id=options["client_id"],
                tenant=options["tenant"],
                practice_id=options["practice_id"],
                token_lifetime=options["token_lifetime"],
                unity_users=unity_users or None,
                granted_scopes=options["granted_scope"],
            )
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc))
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        extra = {
            "athena": f" v1 {sim.origin}/v1/{options['practice_id']}",
            "veradigm": f" unity {sim.origin}/Unity/UnityService.svc/json/",
        }.get(sim.profile, "")
        self.stdout.write(
            f"EHR simulator ({sim.profile}) ready: origin {sim.origin} fhir {sim.fhir_base}{extra} "
            f"token {sim.token_url} control {sim.origin}/_sim/"
        )
        self.stdout.flush()
        while not stop.wait(0.5):
            pass
        sim.stop()
