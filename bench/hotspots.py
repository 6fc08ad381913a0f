"""Where the time goes: cProfile of the intake path and of the worker path, in process.

    python bench/hotspots.py intake [--events 200] [--measurements 6|1]
    python bench/hotspots.py worker [--writes 300] [--batch 1] [--cpu-profile | --no-profile]
    python bench/hotspots.py drain [--writes 300] [--concurrency 1] [--target simulator|sekmet]
                                   [--cpu-profile | --no-profile]
    python bench/hotspots.py claims [--writes 300] [--concurrency 8]

Each clones the benchmark template database (made by `--setup`; each run of bench/run.py makes and
drops its own), then:
- intake: posts vitals events (6 measurements, or 1 with --measurements 1) through Django's test client
  (the full API stack, no HTTP socket);
- worker: starts the EHR simulator as its own process and drains pending writes with a SyncWorker on
  this thread (concurrency 1, so cProfile sees every call);
- drain: the production worker loop (SyncWorker.run: claims, leases, `--concurrency` write threads)
  draining into the simulator or into sekmet-fhir (bench/sekmet_server.py), one profiler over all threads.
It prints the time and the SQL queries per item, then the functions by cumulative time: the project's
own (`--top`, 30 by default) and everything (including Django, httpx, pydantic), then by own time.
- claims: runs the real worker loop (SyncWorker.run, threads) and counts the writes each claim took.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time

from common import (
    PY,
    ROOT,
    TEMPLATE_DB,
    clone_database,
    create_empty_database,
    django_env,
    drop_database,
    fixtures,
    stop,
)

PROJECT = ("writeback/", "adapters/", "console/")


def _django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writeback.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


TOP = 30
PROFILE = True  # --no-profile: time and count only (CPU per item without the profiler's overhead)
CPU_TIMER = False  # --cpu-profile: the profiler counts this process's CPU time, not wall-clock time


def _profiler() -> cProfile.Profile:
    """With --cpu-profile, waits (HTTP, SQL round trips) cost nothing: exact CPU attribution on one thread
    (worker), the whole process's CPU smeared over whichever calls are open (drain with threads)."""
    return cProfile.Profile(time.process_time) if CPU_TIMER else cProfile.Profile()


def _report(
    profiler: cProfile.Profile | pstats.Stats,
    items: int,
    seconds: float,
    queries: QueryLog,
    what: str,
    cpu_seconds: float | None = None,
) -> None:
    under = "under cProfile" if PROFILE else "no profiler"
    cpu = f", this process's CPU {1000 * cpu_seconds / items:.1f} ms each" if cpu_seconds is not None else ""
    print(f"\n{what}: {items} in {seconds:.2f} s = {1000 * seconds / items:.1f} ms each ({under}{cpu}), "
          f"{queries.count / items:.1f} SQL queries each")  # fmt: skip
    if not PROFILE:
        return
    print("SQL time by statement (wall clock, including the wait for PostgreSQL):")
    print(queries.top(items))
    for title, restrictions in (
        ("project functions by cumulative time", ("|".join(PROJECT), TOP)),
        ("all functions by cumulative time", (TOP,)),
        ("all functions by own time", (TOP // 2,)),
    ):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime" if "own" in title else "cumulative").print_stats(*restrictions)
        print(f"--- {title} (ms per item = cumtime / {items} x 1000) ---")
        print(_short_paths(out.getvalue()))


def _short_paths(text: str) -> str:
    """File names relative to the project, site-packages or the standard library (shorter, and no
    machine's folders in what gets pasted into the docs)."""
    import re
    import sysconfig

    text = text.replace(f"{ROOT}/", "")
    text = re.sub(r"\S*/site-packages/", "", text)
    return text.replace(f"{sysconfig.get_paths()['stdlib']}/", "")


class QueryLog:
    """Counts SQL statements and their time, grouped by the statement's first words."""

    def __init__(self) -> None:
        self.count = 0
        self.by_kind: dict[str, list[float]] = {}

    def __call__(self, execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.count += 1
            kind = " ".join(sql.split()[:6])[:90]
            self.by_kind.setdefault(kind, []).append(time.perf_counter() - began)

    def top(self, items: int, n: int = 12) -> str:
        rows = sorted(self.by_kind.items(), key=lambda kv: -sum(kv[1]))[:n]
        lines = ["  per item: calls  ms   statement"]
        for kind, times in rows:
            lines.append(f"  {len(times) / items:14.1f} {1000 * sum(times) / items:5.2f}   {kind}")
        return "\n".join(lines)

    def install(self):
        from django.db import connection

        return connection.execute_wrapper(self)


def profile_intake(events: int, measurements: int) -> None:
    _django(clone_database("wbdrill_bench_profile"))
    from events import vitals_event
    from rest_framework.test import APIClient

    from writeback.models import ApiToken

    token = ApiToken.objects.first()
    client = APIClient()
    client.force_authenticate(user=token.user, token=token)
    for i in range(5):  # warm-up: imports, caches
        client.post("/api/v1/events", vitals_event(f"warm-{i}", 1001 + i, measurements), format="json")
    queries = QueryLog()
    profiler = cProfile.Profile()
    began = time.monotonic()
    with queries.install():
        profiler.enable()
        for i in range(events):
            body = vitals_event(f"prof-{i}", 1001 + i % 200, measurements)
            response = client.post("/api/v1/events", body, format="json")
            assert response.status_code == 201, response.content
        profiler.disable()
    what = f"vitals events ({measurements} measurement{'s' if measurements > 1 else ''}, so as many writes)"
    _report(profiler, events, time.monotonic() - began, queries, what)


def _simulator(database_url: str) -> tuple[subprocess.Popen, str]:
    sim = subprocess.Popen(
        [PY, "manage.py", "run_ehr_simulator", "--port", "0", "--profile", "generic"],
        cwd=ROOT, env=django_env(database_url), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = sim.stdout.readline()
    return sim, line.split(" fhir ")[1].split()[0]


def claim_batches(writes: int, concurrency: int) -> None:
    """How many writes each claim takes in the real loop (SyncWorker.run, `concurrency` threads)."""
    url = clone_database("wbdrill_bench_profile")
    sim, fhir = _simulator(url)
    try:
        fixtures("writes", url, "--count", str(writes), "--base-url", fhir)
        _django(url)
        from collections import Counter

        from writeback.sync import worker as worker_module

        sizes: Counter = Counter()
        real_claim = worker_module.claim_due

        def claim_due(*args, **kwargs):
            claimed = real_claim(*args, **kwargs)
            sizes[len(claimed)] += 1
            return claimed

        worker_module.claim_due = claim_due
        began = time.monotonic()
        stats = worker_module.SyncWorker(concurrency=concurrency, until_idle=True, idle_sleep=0.05).run()
        elapsed = time.monotonic() - began
        taking = {k: v for k, v in sizes.items() if k}
        claimed = sum(k * v for k, v in taking.items())
        print(f"{stats.processed} writes in {elapsed:.1f} s with {concurrency} threads; "
              f"{sum(taking.values())} claims took {claimed} writes: "
              f"{claimed / max(1, sum(taking.values())):.2f} writes per claim; "
              f"{sizes[0]} claims came back empty; sizes {dict(sorted(taking.items()))}")  # fmt: skip
    finally:
        stop(sim)


def profile_worker(writes: int, batch: int) -> None:
    url = clone_database("wbdrill_bench_profile")
    sim, fhir = _simulator(url)
    try:
        fixtures("writes", url, "--count", str(writes), "--base-url", fhir)
        _django(url)
        from writeback.models import Write
        from writeback.sync.worker import SyncWorker

        queries = QueryLog()
        profiler = _profiler()
        began, cpu = time.monotonic(), time.process_time()
        with queries.install():
            if PROFILE:
                profiler.enable()
            # `batch` writes per claim and per settlement, processed one after another on this thread.
            SyncWorker(concurrency=batch).drain(max_cycles=100_000)
            profiler.disable()
        cpu = time.process_time() - cpu
        done = Write.objects.filter(state="committed").count()
        _report(profiler, done, time.monotonic() - began, queries, "writes sent and recorded", cpu)
    finally:
        stop(sim)


def profile_drain(writes: int, concurrency: int, target: str) -> None:
    """The production loop, SyncWorker.run (claims, leases, a pool of `concurrency` threads), draining
    into the simulator or sekmet. Since Python 3.12 one cProfile profiler sees every thread (and a second
    cannot be enabled), so the profile covers the claiming thread and all write threads; with more than
    one write thread, the cumulative time of a call that waits (HTTP, SQL) includes what other threads
    ran meanwhile, so read own times there, or use concurrency 1 (the default) for exact attribution."""
    url = clone_database("wbdrill_bench_profile")
    server = sim = None
    try:
        if target == "sekmet":
            from sekmet_server import Sekmet

            server = Sekmet()
            base = server.base
        else:
            sim, base = _simulator(url)
        fixtures("writes", url, "--count", str(writes), "--base-url", base, "--discover")
        _django(url)
        from writeback.models import Write
        from writeback.sync import worker as worker_module

        queries = QueryLog()
        real_run_one = worker_module.SyncWorker._run_one

        def run_one(self, write, *args):
            with queries.install():  # each thread has its own connection
                return real_run_one(self, write, *args)

        worker_module.SyncWorker._run_one = run_one
        profiler = _profiler()
        began, cpu = time.monotonic(), time.process_time()
        with queries.install():
            if PROFILE:
                profiler.enable()
            worker_module.SyncWorker(concurrency=concurrency, until_idle=True, idle_sleep=0.05).run()
            profiler.disable()
        elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
        done = Write.objects.filter(state="committed").count()
        if done != writes:
            raise SystemExit(f"only {done} of {writes} writes committed")
        print(f"\nSyncWorker.run with {concurrency} write thread(s), into {target} ({base})")
        _report(profiler, done, elapsed, queries, "writes sent and recorded", cpu)
    finally:
        if server is not None:
            server.close()
        if sim is not None:
            stop(sim)


def main() -> None:
    global TOP, PROFILE, CPU_TIMER  # how many functions _report lists; whether and how to profile
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("intake", "worker", "drain", "claims"))
    parser.add_argument("--measurements", type=int, choices=(1, 6), default=6, help="intake: per event")
    parser.add_argument("--target", choices=("simulator", "sekmet"), default="simulator", help="drain")
    parser.add_argument("--top", type=int, default=TOP, help="functions listed")
    parser.add_argument("--no-profile", action="store_true", help="worker, drain: time and CPU only")
    parser.add_argument("--cpu-profile", action="store_true", help="worker, drain: profile CPU time")
    parser.add_argument("--batch", type=int, default=1, help="worker: writes per claim and settlement")
    parser.add_argument("--concurrency", type=int, help="claims (default 8), drain (default 1): threads")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--setup", action="store_true", help="(re)build the template database first")
    args = parser.parse_args()
    TOP, PROFILE, CPU_TIMER = args.top, not args.no_profile, args.cpu_profile
    if args.setup:
        print(json.loads(fixtures("template", create_empty_database(TEMPLATE_DB))))
    try:
        if args.what == "intake":
            profile_intake(args.events, args.measurements)
        elif args.what == "worker":
            profile_worker(args.writes, args.batch)
        elif args.what == "drain":
            profile_drain(args.writes, args.concurrency or 1, args.target)
        else:
            claim_batches(args.writes, args.concurrency or 8)
    finally:
        drop_database("wbdrill_bench_profile")  # WITH (FORCE): our own connection goes too


if __name__ == "__main__":
    main()
