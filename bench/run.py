"""Benchmarks of the write-back system on this machine (`make bench`).

    python bench/run.py [--quick] [--write-docs] [--only NAMES] [--runs 3] [--keep-million]

NAMES, comma-separated (default: the first four; `baseline` = intake-limit and 5-9; `all`):
1. intake: events/s posting vitals events through gunicorn (2 sync workers): PostgreSQL with persistent
   connections (CONN_MAX_AGE=600) and without (CONN_MAX_AGE=0), and SQLite;
2. worker: writes/s draining N pending writes into the simulator (its own process, generic profile) with
   1 and 2 `run_sync_worker` processes at concurrency 4 and 8;
3. claim: ms per claim of 20 writes with 50,000 pending;
4. console: ms to render the write list with 10,000 writes;
intake-limit: the bare Django + DRF insert (bench/bare_api.py), a single-measurement vitals event and
   the 6-measurement one, in turn in each run, through gunicorn on PostgreSQL: ratios to the bare insert;
5. sekmet: 2 worker processes draining 1,000 Observation creates (--quick: 300) into an independent FHIR
   server from PyPI (sekmet-fhir 0.1.1, its own venv under .bench/), checked on the server (exactly one
   Observation per write, each the ledger's), against the limit measured in the same run: a bare
   keep-alive httpx loop POSTing the same resources, in 1 and 2 processes (bench/fhir_drain.py);
6. peer: the PyPI package ehr-writeback writing the same Observations (bench/peer.py); runs with 5;
7. faults: 5 through bench/faultproxy.py (15 % of POSTs lose their answer after commit, 3 % get a 500
   after commit, 3 % a 503 before), asserting 0 duplicates, 0 lost, 0 ledger mismatches; the peer too;
8. million: console pages p50/p95 over HTTP (gunicorn) as a signed-in admin with 1,000,000 writes
   (--quick: 100,000) made by bench/million.py, and their SQL query counts (bench/console_http.py);
9. rss: RSS of 2 worker processes at the start, middle and end of a 100,000-write drain (--quick: 20,000).

Every figure is the median of --runs runs (3 by default) with min-max (the RSS run is one run). The
markdown tables go to stdout, progress to stderr; --write-docs also puts each table, the machine facts
and the command into docs/benchmarks.md (between its markers; the analysis around them is kept). Needs
PostgreSQL (BENCH_PG, default postgres://postgres@127.0.0.1:5432); makes and drops databases named
wbdrill_bench_* (--keep-million keeps the million-row one for the next run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import fhir_drain
import intake
import peer
import psycopg
import sekmet_server
import worker
from common import (
    PY,
    ROOT,
    TEMPLATE_DB,
    Measure,
    clone_database,
    create_empty_database,
    django_env,
    drop_database,
    fixtures,
    load_average,
    machine_facts,
    pg_url,
    repeat,
    run,
)

DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Row:
    number: str
    what: str
    measure: Measure
    reference: str = ""
    reference_value: float | None = None
    lower_is_better: bool = False
    # Ratios to a limit measured in the same run (one per run): shown as their median (min-max).
    ratios: list[float] | None = None

    def ratio(self) -> str:
        if self.ratios:
            med = statistics.median(self.ratios)
            spread = f" ({min(self.ratios):.2f}–{max(self.ratios):.2f})" if len(self.ratios) > 1 else ""
            return f"**{med:.2f}×**{spread}"
        if not self.reference_value or not self.measure.values:
            return ""
        r = self.measure.median / self.reference_value
        if self.lower_is_better:  # a time: the share of the reference's speed we reach
            r = 1 / r
        return f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×"


@dataclass
class Settings:
    runs: int
    intake_seconds: float
    intake_threads: int
    worker_writes: int
    claim_pending: int
    claims: int
    console_writes: int
    console_requests: int
    quick: bool
    fhir_writes: int = 1000
    million_writes: int = 1_000_000
    million_requests: int = 20
    rss_writes: int = 100_000


# -- 1. intake -------------------------------------------------------------------------------------------


def bench_intake(cfg: Settings, token: str, rows: list[Row]) -> None:
    sqlite_dir = Path(tempfile.mkdtemp(prefix="wbdrill_bench_"))
    configs: list[tuple[str, str, Callable[[], str], int, str, float]] = [
        ("1a", "PostgreSQL, CONN_MAX_AGE=600", lambda: clone_database("wbdrill_bench_api"), 600, "4a", 925),
    ]
    if not cfg.quick:
        configs.append(
            ("1b", "PostgreSQL, CONN_MAX_AGE=0", lambda: clone_database("wbdrill_bench_api"), 0, "4b", 129)
        )
    sqlite_template = sqlite_dir / "template.sqlite3"
    sqlite_token = json.loads(fixtures("template", f"sqlite:///{sqlite_template}"))["token"]

    def sqlite_copy() -> str:
        target = sqlite_dir / "api.sqlite3"
        shutil.copyfile(sqlite_template, target)
        return f"sqlite:///{target}"

    configs.append(("1c", "SQLite (WAL)", sqlite_copy, 0, "4c", 443))
    try:
        for number, label, make_db, conn_max_age, ref, ref_value in configs:
            url = make_db()
            key = sqlite_token if url.startswith("sqlite") else token
            m = _intake_runs(cfg, url, key, conn_max_age, number, label)
            rows.append(
                Row(
                    number,
                    f"Intake API, vitals events (6 writes each), gunicorn 2 sync workers, {label}, "
                    f"{cfg.intake_threads} client threads",
                    m,
                    f"{ref_value:,.0f} req/s (limits.md {ref}, a 4-field insert)",
                    ref_value,
                )
            )
    finally:
        drop_database("wbdrill_bench_api")
        shutil.rmtree(sqlite_dir, ignore_errors=True)


def _intake_runs(cfg: Settings, url: str, key: str, conn_max_age: int, number: str, label: str) -> Measure:
    latencies: list[str] = []

    def once(i: int) -> float:
        result = intake.measure(
            url,
            key,
            conn_max_age=conn_max_age,
            seconds=cfg.intake_seconds,
            threads=cfg.intake_threads,
            tag=f"{number}-{i}",
        )
        latencies.append(f"{result.latency_ms:.0f}")
        cpu.append(f"{result.server_cpu_ms:.0f}/{result.client_cpu_ms:.0f}")
        return result.events_per_s

    cpu: list[str] = []
    m = repeat(Measure(f"intake {label}", "events/s"), cfg.runs, once, log)
    m.notes.append(f"median POST latency per run: {', '.join(latencies)} ms")
    m.notes.append(f"CPU per event, gunicorn workers/client: {', '.join(cpu)} ms")
    return m


# -- 2. worker -------------------------------------------------------------------------------------------


def bench_worker(cfg: Settings, rows: list[Row]) -> None:
    sim = worker.start_simulator(f"sqlite:///{tempfile.gettempdir()}/wbdrill-bench-unused.sqlite3")
    letters = iter("abcd")
    try:
        for processes in (1, 2):
            for concurrency in (4, 8):
                walls: list[str] = []
                cpu: list[str] = []

                def once(
                    _: int,
                    p: int = processes,
                    k: int = concurrency,
                    walls: list[str] = walls,
                    cpu: list[str] = cpu,
                ) -> float:
                    result = worker.measure(sim, processes=p, concurrency=k, writes=cfg.worker_writes)
                    walls.append(f"{result.wall_writes_per_s:.0f}")
                    cpu.append(f"{result.worker_cpu_ms:.0f}/{result.simulator_cpu_ms:.1f}")
                    return result.writes_per_s

                label = f"{processes} process{'es' if processes > 1 else ''}, concurrency {concurrency}"
                m = repeat(Measure(f"worker {label}", "writes/s"), cfg.runs, once, log)
                m.notes.append(f"wall clock incl. process start-up: {', '.join(walls)} writes/s")
                m.notes.append(f"CPU per write, workers/simulator: {', '.join(cpu)} ms")
                rows.append(
                    Row(
                        f"2{next(letters)}",
                        f"Worker drain, {cfg.worker_writes} Observation creates (one POST each, its answer "
                        f"the read-back) into the simulator, {label}",
                        m,
                        "1,160 writes/s (limits.md 5c: 2 workers, k=20, Python ASGI mock)",
                        1160,
                    )
                )
        limit = _worker_limit(cfg, sim, rows)
        for row in rows:
            if row.number in ("2a", "2b", "2c", "2d"):
                row.reference = f"{limit:,.0f} writes/s: 2f, the bare loop (2 processes) in this invocation"
                row.reference_value = limit
    finally:
        worker.stop(sim.proc)
        drop_database("wbdrill_bench_worker")
        fhir_drain.cleanup()


def _worker_limit(cfg: Settings, sim: worker.Simulator, rows: list[Row]) -> float:
    """The limit of rows 2a-2d measured on this machine now: the same resources POSTed into the same
    simulator (reset each run) by the bare loop, 1 and 2 processes. Returns the 2-process median."""
    bodies = fhir_drain.resources(cfg.worker_writes)
    medians: dict[int, float] = {}
    for number, processes in (("2e", 1), ("2f", 2)):
        runs: list[fhir_drain.Run] = []
        loads: list[str] = []
        for _ in range(cfg.runs):
            loads.append(_load())
            sim.reset()
            runs.append(fhir_drain.bare_into(f"{sim.fhir}/Observation", sim.proc.pid, bodies, processes))
            if sim.resources() - worker.SEED_RESOURCES != len(bodies):
                raise RuntimeError("the simulator does not hold one resource per POST")
        m = Measure(
            f"bare loop into the simulator, {processes} process(es)",
            "writes/s",
            [r.writes_per_s for r in runs],
        )
        m.notes += [
            "CPU per write, client/simulator: "
            + ", ".join(f"{r.client_cpu_ms:.1f}/{r.server_cpu_ms:.1f}" for r in runs)
            + " ms",
            f"load average (1 min) at the start of each run: {', '.join(loads)}",
        ]
        label = f"{processes} process{'es' if processes > 1 else ''}"
        rows.append(
            Row(
                number,
                "The limit of 2a-2d, measured now: a bare keep-alive httpx loop POSTing the same "
                f"{cfg.worker_writes} resources into the same simulator, {label} "
                "(no If-None-Exist, no read-back)",
                m,
                "1,160 writes/s (limits.md 5c: 2 workers, k=20, Python ASGI mock)",
                1160,
            )
        )
        medians[processes] = m.median
    return medians[2]


# -- 3. claim --------------------------------------------------------------------------------------------


def bench_claim(cfg: Settings, rows: list[Row]) -> None:
    base = "wbdrill_bench_claim_base"
    url = clone_database(base)
    fixtures("writes", url, "--count", str(cfg.claim_pending), "--patients", "5000")
    p95: list[str] = []
    plans: list[str] = []

    def once(_: int) -> float:
        run_url = clone_database("wbdrill_bench_claim", template=base)
        out = json.loads(run([PY, "bench/claim.py", "--claims", str(cfg.claims)], django_env(run_url)))
        p95.append(f"{out['p95_ms']:.1f}")
        plans.append(f"{out['select_execution_ms']:.2f}")
        return out["median_ms"]

    try:
        m = repeat(Measure("claim of 20", "ms"), cfg.runs, once, log)
    finally:
        drop_database("wbdrill_bench_claim")
        drop_database(base)
    m.notes.append(
        f"p95 per run: {', '.join(p95)} ms; PostgreSQL execution of the SELECT: {', '.join(plans)} ms"
    )
    rows.append(
        Row(
            "3",
            "Claim latency: `claim_due(worker, 20)` (holds, SELECT … FOR UPDATE SKIP LOCKED, lease UPDATE), "
            f"{cfg.claim_pending:,} pending, {cfg.claims} claims per run",
            m,
            "3.1 ms per claim transaction (limits.md 2c: 321 tx/s of k=20, 1 worker, incl. outcome writes)",
            3.1,
            lower_is_better=True,
        )
    )


# -- 4. console ------------------------------------------------------------------------------------------


def bench_console(cfg: Settings, rows: list[Row]) -> None:
    url = clone_database("wbdrill_bench_console")
    fixtures("writes", url, "--count", str(cfg.console_writes), "--states", "mixed")
    results: list[dict] = []

    def page(name: str) -> Callable[[int], float]:
        def once(i: int) -> float:
            if len(results) <= i:
                cmd = [PY, "bench/console_page.py", "--requests", str(cfg.console_requests)]
                results.append(json.loads(run(cmd, django_env(url))))
            return results[i][name]["median_ms"]

        return once

    try:
        for letter, name in zip("abc", ("first page", "page 100", "state=failed_terminal"), strict=True):
            m = repeat(Measure(f"console {name}", "ms"), cfg.runs, page(name), log)
            m.notes.append(f"{results[0][name]['queries']} SQL queries per page")
            rows.append(
                Row(
                    f"4{letter}",
                    f"Console write list `/writes/`, {name}, {cfg.console_writes:,} writes, admin, "
                    "Django test client (no socket)",
                    m,
                    lower_is_better=True,
                )
            )
    finally:
        drop_database("wbdrill_bench_console")


# -- 1d-1f. intake against the bare insert, same run ------------------------------------------------------


def bench_intake_limit(cfg: Settings, token: str, rows: list[Row]) -> None:
    """The bare DRF insert, a single-measurement event and the 6-measurement vitals event, in turn in
    each run, on fresh copies of the template (PostgreSQL, CONN_MAX_AGE=600, the same 4 client threads)."""
    kinds = (("bare", "the bare insert"), (1, "1 measurement"), (6, "6 measurements"))
    runs: dict[object, list[intake.IntakeRun]] = {k: [] for k, _ in kinds}
    loads: list[str] = []
    try:
        for i in range(cfg.runs):
            loads.append(_load())
            for kind, label in kinds:
                url = clone_database("wbdrill_bench_api")
                result = intake.measure(
                    url,
                    token,
                    conn_max_age=600,
                    seconds=cfg.intake_seconds,
                    threads=cfg.intake_threads,
                    tag=f"limit-{kind}-{i}",
                    measurements=6 if kind == "bare" else int(kind),
                    bare=kind == "bare",
                )
                runs[kind].append(result)
                log(f"  run {i + 1}/{cfg.runs}: {label} {result.events_per_s:.0f}/s")
    finally:
        drop_database("wbdrill_bench_api")
    load_note = f"load average (1 min) at the start of each run: {', '.join(loads)}"

    def notes(results: list[intake.IntakeRun]) -> list[str]:
        return [
            f"median POST latency per run: {_per_run([r.latency_ms for r in results])} ms",
            "CPU per request, gunicorn workers/client: "
            + ", ".join(f"{r.server_cpu_ms:.1f}/{r.client_cpu_ms:.1f}" for r in results)
            + " ms",
        ]

    bare = runs["bare"]
    m = Measure("bare insert", "req/s", [r.events_per_s for r in bare])
    m.notes += [*notes(bare), "4-field DRF serializer + one INSERT (bench/bare_api.py)", load_note]
    where = f"gunicorn 2 sync workers, PostgreSQL, CONN_MAX_AGE=600, {cfg.intake_threads} client threads"
    rows.append(Row("1d", f"The limit: a bare Django + DRF insert, {where}", m, "limits.md 4a: 925 req/s"))
    for number, kind, what in (
        ("1e", 1, "Intake API, a single-measurement vitals event (1 write)"),
        ("1f", 6, "Intake API, the 6-measurement vitals event (6 writes)"),
    ):
        m = Measure(f"intake {kind}", "events/s", [r.events_per_s for r in runs[kind]])
        m.notes += notes(runs[kind])
        if kind == 6:
            m.notes.append(
                "goal: ≥ 150 events/s, reached "
                + _per_run([r.events_per_s / 150 for r in runs[6]], "{:.2f}")
                + "×"
            )
        rows.append(
            Row(
                number,
                f"{what}, {where}",
                m,
                "1d: the bare insert, same run",
                ratios=[r.events_per_s / b.events_per_s for r, b in zip(runs[kind], bare, strict=True)],
            )
        )


# -- 5, 6. drains into an independent FHIR server, the bare limit and the peer ----------------------------

FAULTS = (0.15, 0.03, 0.03)  # dropped after commit, 503 before forwarding, 500 after commit (of POSTs)


def _load() -> str:
    return load_average().split(",")[0]


def _per_run(values: list[float], fmt: str = "{:.0f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def _ratios(runs: list[fhir_drain.Run], limits: list[fhir_drain.Run]) -> str:
    return _per_run([r.writes_per_s / b.writes_per_s for r, b in zip(runs, limits, strict=True)], "{:.2f}")


def bench_fhir(cfg: Settings, rows: list[Row], with_peer: bool) -> None:
    """Ours, the bare loop (1 and 2 processes) and the peer, each run on fresh servers, in turn."""
    n = cfg.fhir_writes
    ours_runs: list[fhir_drain.Run] = []
    bare1: list[fhir_drain.Run] = []
    bare2: list[fhir_drain.Run] = []
    peers: list[fhir_drain.Run] = []
    loads: list[str] = []
    try:
        for i in range(cfg.runs):
            loads.append(_load())
            bodies = fhir_drain.resources(n)
            ours_runs.append(fhir_drain.ours(n, processes=2, concurrency=8))
            bare1.append(fhir_drain.bare(bodies, 1))
            bare2.append(fhir_drain.bare(bodies, 2))
            if with_peer:
                peers.append(peer.drive(bodies, 2))
            log(
                f"  run {i + 1}/{cfg.runs}: ours {ours_runs[-1].writes_per_s:.0f}, bare 1 process "
                f"{bare1[-1].writes_per_s:.0f}, bare 2 processes {bare2[-1].writes_per_s:.0f}"
                + (f", peer {peers[-1].writes_per_s:.0f}" if with_peer else "")
                + " writes/s"
            )
    finally:
        fhir_drain.cleanup()
    load_note = f"load average (1 min) at the start of each run: {', '.join(loads)}"
    server = f"sekmet-fhir 0.1.1 (FastAPI + SQLite in memory, strict validation), {n:,} Observation creates"
    ours = Measure("ours", "writes/s", [r.writes_per_s for r in ours_runs])
    ours.notes += [
        "2 `run_sync_worker` processes, concurrency 8; rate from the ledger's first to last commit; wall "
        f"clock incl. start-up: {_per_run([r.notes['wall_writes_per_s'] for r in ours_runs])} writes/s",
        "CPU per write, workers/server: "
        + ", ".join(f"{r.client_cpu_ms:.1f}/{r.server_cpu_ms:.1f}" for r in ours_runs)
        + " ms (workers incl. their ~1 s of Django start-up each)",
        f"ratio to the bare loop with 1 process: {_ratios(ours_runs, bare1)}",
        f"every run: {n:,} committed, {n:,} Observations carrying our identifier on the server "
        "(search by identifier system), 0 duplicates, 0 lost, 0 ledger mismatches; requests: "
        + ", ".join(f"{k} {v}" for k, v in ours_runs[0].notes["attempts"].items()),
        load_note,
    ]
    rows.append(
        Row(
            "5a",
            f"Drain into an independent FHIR server: {server}, ours",
            ours,
            "5c: the bare loop, 2 processes, same run",
            ratios=[o.writes_per_s / b.writes_per_s for o, b in zip(ours_runs, bare2, strict=True)],
        )
    )
    for number, label, runs in (("5b", "1 process", bare1), ("5c", "2 processes", bare2)):
        m = Measure(f"bare {label}", "writes/s", [r.writes_per_s for r in runs])
        m.notes.append(
            "CPU per write, client/server: "
            + ", ".join(f"{r.client_cpu_ms:.1f}/{r.server_cpu_ms:.1f}" for r in runs)
            + " ms"
        )
        m.notes.append("every answer 201; the server holds exactly N")
        rows.append(
            Row(
                number,
                f"The limit: a bare keep-alive `httpx.Client` loop POSTing the same {n:,} resources (our "
                f"identifier on each) to a fresh server of the same kind, {label}",
                m,
            )
        )
    if with_peer:
        m = Measure("peer", "writes/s", [r.writes_per_s for r in peers])
        m.notes += [
            "CPU per write, peer/server: "
            + ", ".join(f"{r.client_cpu_ms:.1f}/{r.server_cpu_ms:.1f}" for r in peers)
            + " ms",
            "every run: all succeeded, the server holds exactly N; 2 processes × its default 5 tasks",
            f"its ratio to the bare loop (2 processes): {_ratios(peers, bare2)}",
            load_note,
        ]
        rows.append(
            Row(
                "6",
                f"The peer `ehr-writeback` 0.1.0a1 from PyPI (bench/peer.py) writing the same {n:,} "
                "Observations into a fresh server of the same kind",
                m,
                "ratio = ours (5a) ÷ the peer, same run",
                ratios=[o.writes_per_s / p.writes_per_s for o, p in zip(ours_runs, peers, strict=True)],
            )
        )


# -- 7. faults --------------------------------------------------------------------------------------------


def bench_faults(cfg: Settings, rows: list[Row]) -> None:
    n = cfg.fhir_writes
    ours_runs: list[fhir_drain.Run] = []
    peers: list[fhir_drain.Run] = []
    loads: list[str] = []
    try:
        for i in range(cfg.runs):
            loads.append(_load())
            bodies = fhir_drain.resources(n)
            ours_runs.append(fhir_drain.ours(n, processes=2, concurrency=8, faults=FAULTS))
            peers.append(peer.drive(bodies, 2, faults=FAULTS))
            log(
                f"  run {i + 1}/{cfg.runs}: ours {ours_runs[-1].writes_per_s:.0f} writes/s, 0 duplicates; "
                f"peer {peers[-1].writes_per_s:.0f} writes/s, {peers[-1].notes['duplicates']} duplicates"
            )
    finally:
        fhir_drain.cleanup()
    drop, before, after = FAULTS
    faults = (
        f"{drop:.0%} of POSTs answered never (connection closed after the server committed), "
        f"{after:.0%} answered 500 after commit, {before:.0%} answered 503 without forwarding"
    )
    load_note = f"load average (1 min) at the start of each run: {', '.join(loads)}"
    m = Measure("ours under faults", "writes/s", [r.writes_per_s for r in ours_runs])
    m.notes += [
        "every run: 0 duplicates, 0 lost, 0 ledger mismatches, N committed (asserted)",
        "fates at the proxy: " + "; ".join(json.dumps(r.notes["proxy"]) for r in ours_runs),
        "requests: " + "; ".join(json.dumps(r.notes["attempts"]) for r in ours_runs),
        "CPU per write, workers/server: "
        + ", ".join(f"{r.client_cpu_ms:.1f}/{r.server_cpu_ms:.1f}" for r in ours_runs)
        + " ms; retries wait the product's default backoff (2 s base, jittered)",
        load_note,
    ]
    rows.append(
        Row(
            "7a",
            f"Ours under faults, {n:,} Observation creates into sekmet through bench/faultproxy.py: {faults}",
            m,
        )
    )
    m = Measure("peer under faults", "writes/s", [r.writes_per_s for r in peers])
    m.notes += [
        "lost (never stored): "
        + _per_run([r.notes["lost"] for r in peers])
        + "; dead-lettered: "
        + _per_run([r.notes["dead_lettered"] for r in peers]),
        "fates at the proxy: " + "; ".join(json.dumps(r.notes["proxy"]) for r in peers),
    ]
    rows.append(Row("7b", f"The peer under the same faults, the same {n:,} Observations", m))
    dup = Measure("peer duplicates", "per 1,000 writes", [1000 * r.notes["duplicates"] / n for r in peers])
    dup.notes.append(f"ours: {_per_run([r.notes['duplicates'] for r in ours_runs])} in the same runs")
    rows.append(
        Row("7c", "Duplicate chart entries per 1,000 writes under these faults: the peer (ours: 0)", dup)
    )


# -- 8. console with a million writes ---------------------------------------------------------------------


def _million_template(writes: int) -> tuple[str, str, dict]:
    """The million-row database: built (seed, then multiply) unless a cached one of the same code and
    migrations exists. Returns its name, URL and how it was made."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "writeback" / "migrations").glob("*.py"), ROOT / "bench" / "million.py"]):
        digest.update(path.name.encode() + path.read_bytes())
    name = f"wbdrill_bench_million_{writes}_{digest.hexdigest()[:8]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        existing = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'wbdrill_bench_million_%'"
            )
        ]
    if name in existing:
        log(f"  reusing the cached database {name}")
        return name, pg_url(name), {"cached": True}
    for stale in existing:
        drop_database(stale)
    url = create_empty_database(name)
    began = time.monotonic()
    seeded = json.loads(run([PY, "bench/million.py", "seed"], django_env(url), timeout=1800))
    seed_s = time.monotonic() - began
    multiplied = json.loads(
        run([PY, "bench/million.py", "multiply", "--writes", str(writes)], django_env(url), timeout=4 * 3600)
    )
    with psycopg.connect(pg_url("postgres")) as conn:
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(%s))", [name]).fetchone()[0]
    made = {
        "seed_s": seed_s,
        "multiply_s": time.monotonic() - began - seed_s,
        "seed": {k: v for k, v in seeded.items() if k != "states"},
        "counts": multiplied,
        "size": size,
    }
    log(f"  built {name} in {made['seed_s'] + made['multiply_s']:.0f} s: {json.dumps(multiplied)}")
    return name, url, made


def bench_million(cfg: Settings, rows: list[Row], keep: bool) -> None:
    name, url, made = _million_template(cfg.million_writes)
    results: list[dict] = []
    loads: list[str] = []
    try:
        for i in range(cfg.runs):
            loads.append(_load())
            cmd = [PY, "bench/console_http.py", "--requests", str(cfg.million_requests)]
            results.append(json.loads(run(cmd, django_env(url), timeout=3600)))
            log(
                f"  run {i + 1}/{cfg.runs}: "
                + ", ".join(f"{k} {v['p95_ms']:.0f}" for k, v in results[-1].items())
            )
    finally:
        if not keep:
            drop_database(name)
    counts = made.get("counts", {})
    if made.get("cached"):
        how = "a cached database (built by an earlier run with the same code and migrations)"
    else:
        how = (
            f"built in {made['seed_s'] + made['multiply_s']:.0f} s (seed {made['seed_s']:.0f} s, SQL copies "
            f"{made['multiply_s']:.0f} s: {json.dumps(counts.get('seconds', {}))}), {made['size']} on disk"
        )
    ledger = (
        (
            f"{counts.get('write', cfg.million_writes):,} writes, {counts.get('businessevent', 0):,} events, "
            f"{counts.get('writeattempt', 0):,} attempts, {counts.get('auditentry', 0):,} audit entries, "
            f"{counts.get('alert', 0):,} alerts, {counts.get('approval', 0):,} approvals"
        )
        if counts
        else f"{cfg.million_writes:,} writes"
    )
    for letter, page in zip("abcdefghi", results[0], strict=False):
        m = Measure(f"console {page}", "ms p95", [r[page]["p95_ms"] for r in results])
        m.notes += [
            f"`{results[0][page]['url']}`",
            f"p50 per run: {_per_run([r[page]['p50_ms'] for r in results])} ms",
            f"{results[0][page]['queries']} SQL queries; {results[0][page]['bytes']:,} bytes",
        ]
        if letter == "a":
            m.notes += [
                f"ledger: {ledger}; {how}",
                f"load average (1 min) at the start of each run: {', '.join(loads)}",
            ]
        rows.append(
            Row(
                f"8{letter}",
                f"Console {page}, {cfg.million_writes:,} writes, signed-in admin, over HTTP (gunicorn 2 sync "
                f"workers, PostgreSQL), p95 of {cfg.million_requests} requests per run",
                m,
                "goal: p95 < 150 ms",
                150,
                lower_is_better=True,
            )
        )


# -- 9. worker RSS ----------------------------------------------------------------------------------------


def bench_rss(cfg: Settings, rows: list[Row]) -> None:
    n = cfg.rss_writes
    load = _load()
    sim = worker.start_simulator(f"sqlite:///{tempfile.gettempdir()}/wbdrill-bench-unused.sqlite3")
    try:
        url = clone_database("wbdrill_bench_rss")
        sim.reset()
        fixtures("writes", url, "--count", str(n), "--base-url", sim.fhir)
        run_ = worker.drain(url, processes=2, concurrency=8, writes=n, sample_every=1.0, timeout=4 * 3600)
    finally:
        worker.stop(sim.proc)
        drop_database("wbdrill_bench_rss")
    alive = [s for s in run_.rss if all(v is not None for v in s[2])]
    points = {
        "start": next(s for s in alive if s[1] > 0),
        "middle": next(s for s in alive if s[1] >= n / 2),
        "end": alive[-1],
    }
    for w in range(2):
        start, middle, end = (points[k][2][w] for k in ("start", "middle", "end"))
        done = {k: points[k][1] for k in points}
        growth = (end - middle) / max(1, done["end"] - done["middle"]) * 10_000
        m = Measure(f"worker {w + 1} RSS", "MiB", [end])
        m.notes += [
            f"start {start:.0f} MiB (after {done['start']:,} commits), middle {middle:.0f} MiB "
            f"({done['middle']:,}), end {end:.0f} MiB ({done['end']:,}); "
            f"peak {max(s[2][w] for s in alive):.0f} MiB",
            f"growth from middle to end: {growth:+.2f} MiB per 10,000 writes",
            f"drain rate {run_.writes_per_s:.0f} writes/s; load average (1 min) at the start: {load}",
        ]
        rows.append(
            Row(
                f"9{'ab'[w]}",
                f"Worker RSS (/proc, sampled every second), process {w + 1} of 2 (concurrency 8), "
                f"draining {n:,} Observation creates into the simulator",
                m,
            )
        )


# -- output ----------------------------------------------------------------------------------------------

LEGACY = ("intake", "worker", "claim", "console")
# Each new section has a block of its own in docs/benchmarks.md, so one can be rerun without the others.
BLOCKS = {
    "results": ("Results of the last run", LEGACY),
    "intake": ("Intake against the bare insert: last run", ("intake-limit",)),
    "fhir": ("Drain into an independent FHIR server, its limit and the peer: last run", ("sekmet", "peer")),
    "faults": ("Faults: last run", ("faults",)),
    "million": ("Console with a million writes: last run", ("million",)),
    "rss": ("Worker memory over a long drain: last run", ("rss",)),
}
BASELINE = ("intake-limit", "sekmet", "peer", "faults", "million", "rss")
GROUPS = {"baseline": BASELINE, "all": (*LEGACY, *BASELINE)}


def markers(block: str) -> tuple[str, str]:
    return (
        (START, END)
        if block == "results"
        else (f"<!-- bench:{block}:start -->", f"<!-- bench:{block}:end -->")
    )


def table(rows: list[Row], legacy: bool) -> str:
    reference, ratio = (
        ("Reference ceiling (limits.md)", "Share of the ceiling")
        if legacy
        else ("Limit (measured in the same run)", "Ratio: median of the per-run ratios (min–max)")
    )
    lines = [
        f"| # | What | Result: median (min–max, n runs) | {reference} | {ratio} | Notes |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            row.number,
            row.what,
            row.measure.cell(),
            row.reference,
            row.ratio(),
            "; ".join(row.measure.notes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_block(
    block: str, rows: list[Row], facts: dict[str, str], loads: tuple[str, str], argv: list[str]
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    fact_lines = "\n".join(f"- **{k}:** {v}" for k, v in facts.items())
    command = " ".join(["python", "bench/run.py", *argv])
    start, end = markers(block)
    return f"""{start}
### {BLOCKS[block][0]} ({when})

Command: `{command}` (from the project root; `make bench` runs `python bench/run.py`).

{fact_lines}
- **load average (1, 5, 15 min):** {loads[0]} at the start, {loads[1]} at the end

{table(rows, block == "results")}
{end}"""


def write_docs(block_name: str, block: str) -> None:
    start, end = markers(block_name)
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if start in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1] if end in rest else ""
        DOCS.write_text(before + block + after)
    else:
        DOCS.write_text(text.rstrip("\n") + f"\n\n{block}\n")
    log(f"wrote the {block_name} block of {DOCS.relative_to(ROOT)}")


def _venv(python: Path | str) -> str:
    folder = Path(python).parent.parent
    return str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else "the one BENCH_SEKMET_VENV names"


def tool_facts(only: set[str]) -> dict[str, str]:
    facts = {}
    if only & {"sekmet", "peer", "faults"}:
        facts["FHIR server"] = (
            f"{sekmet_server.REQUIREMENT} in its own virtualenv ({_venv(sekmet_server.python())})"
        )
    if only & {"peer", "faults"}:
        facts["peer"] = f"{peer.REQUIREMENT} in its own virtualenv ({_venv(peer.python())})"
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer writes (same 3 runs)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--only",
        default=",".join(LEGACY),
        help="comma-separated subset of intake,worker,claim,console,intake-limit,sekmet,peer,faults,"
        "million,rss (or baseline = the last six, all)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--keep-million", action="store_true", help="keep the million-row template database for the next run"
    )
    for name in ("fhir", "million", "rss"):
        parser.add_argument(
            f"--{name}-writes", type=int, help=f"override the {name} section's number of writes"
        )
    args = parser.parse_args()
    cfg = Settings(
        runs=args.runs,
        intake_seconds=4 if args.quick else 10,
        intake_threads=4,
        worker_writes=300 if args.quick else 1000,
        claim_pending=50_000,
        claims=50 if args.quick else 200,
        console_writes=10_000,
        console_requests=5 if args.quick else 20,
        quick=args.quick,
        fhir_writes=300 if args.quick else 1000,
        million_writes=100_000 if args.quick else 1_000_000,
        rss_writes=20_000 if args.quick else 100_000,
    )
    cfg.fhir_writes = args.fhir_writes or cfg.fhir_writes
    cfg.million_writes = args.million_writes or cfg.million_writes
    cfg.rss_writes = args.rss_writes or cfg.rss_writes
    only: set[str] = set()
    for name in (s.strip() for s in args.only.split(",") if s.strip()):
        only |= set(GROUPS.get(name, (name,)))
    unknown = only - set(GROUPS["all"])
    if unknown:
        parser.error(f"unknown --only names: {', '.join(sorted(unknown))}")
    load_start = load_average()
    facts = {**machine_facts(), **tool_facts(only)}
    log(f"machine: {facts}")
    log("building the template database ...")
    token = json.loads(fixtures("template", create_empty_database(TEMPLATE_DB)))["token"]
    sections: list[tuple[str, str, Callable[[list[Row]], None]]] = [
        ("intake", "1. intake API", lambda rows: bench_intake(cfg, token, rows)),
        ("worker", "2. worker throughput", lambda rows: bench_worker(cfg, rows)),
        ("claim", "3. claim latency", lambda rows: bench_claim(cfg, rows)),
        ("console", "4. console write list", lambda rows: bench_console(cfg, rows)),
        (
            "intake-limit",
            "1d-1f. intake against the bare insert",
            lambda rows: bench_intake_limit(cfg, token, rows),
        ),
        (
            "sekmet",
            "5, 6. drain into sekmet, the bare loop (and the peer with --only peer)",
            lambda rows: bench_fhir(cfg, rows, "peer" in only),
        ),
        ("faults", "7. faults", lambda rows: bench_faults(cfg, rows)),
        (
            "million",
            "8. console with a million writes",
            lambda rows: bench_million(cfg, rows, args.keep_million),
        ),
        ("rss", "9. worker RSS", lambda rows: bench_rss(cfg, rows)),
    ]
    if "peer" in only:
        only.add("sekmet")  # the peer's ratio is to our drain in the same run
    rows: dict[str, list[Row]] = {}
    try:
        for name, title, bench in sections:
            if name not in only:
                continue
            block = next(b for b, (_, names) in BLOCKS.items() if name in names)
            log(f"{title} (load average {load_average()})")
            bench(rows.setdefault(block, []))
    finally:
        drop_database(TEMPLATE_DB)
    loads = (load_start, load_average())
    for block, block_rows in rows.items():
        if not block_rows:
            continue
        text = results_block(block, block_rows, facts, loads, sys.argv[1:])
        print(text)
        if args.write_docs:
            write_docs(block, text)


if __name__ == "__main__":
    main()
