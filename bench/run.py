"""Benchmarks of the write-back system on this machine (`make bench`).

    python bench/run.py [--quick] [--write-docs] [--only intake,worker,claim,console] [--runs 3]

1. intake: events/s posting vitals events through gunicorn (2 sync workers): PostgreSQL with persistent
   connections (CONN_MAX_AGE=600) and without (CONN_MAX_AGE=0), and SQLite;
2. worker: writes/s draining N pending writes into the simulator (its own process, generic profile) with
   1 and 2 `run_sync_worker` processes at concurrency 4 and 8;
3. claim: ms per claim of 20 writes with 50,000 pending;
4. console: ms to render the write list with 10,000 writes.

Every figure is the median of --runs runs (3 by default) with min-max. The markdown table goes to stdout,
progress to stderr; --write-docs also puts the table, the machine facts and the commands into
docs/benchmarks.md (between its results markers; the analysis around them is kept). Needs PostgreSQL
(BENCH_PG, default postgres://postgres@127.0.0.1:5432); makes and drops databases named wbdrill_bench_*.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import intake
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

    def ratio(self) -> str:
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
                        f"Worker drain, {cfg.worker_writes} Observation creates (POST + read-back GET each) "
                        f"into the simulator, {label}",
                        m,
                        "1,160 writes/s (limits.md 5c: 2 workers, k=20, Python ASGI mock)",
                        1160,
                    )
                )
    finally:
        worker.stop(sim.proc)
        drop_database("wbdrill_bench_worker")


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


# -- output ----------------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| # | What | Result: median (min–max, n runs) | Reference ceiling (limits.md) "
        "| Share of the ceiling | Notes |",
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


def results_block(rows: list[Row], facts: dict[str, str], loads: tuple[str, str], argv: list[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    fact_lines = "\n".join(f"- **{k}:** {v}" for k, v in facts.items())
    command = " ".join(["python", "bench/run.py", *argv])
    return f"""{START}
### Results of the last run ({when})

Command: `{command}` (from the project root; `make bench` runs `python bench/run.py`).

{fact_lines}
- **load average (1, 5, 15 min):** {loads[0]} at the start, {loads[1]} at the end

{table(rows)}
{END}"""


def write_docs(block: str) -> None:
    if DOCS.exists() and START in DOCS.read_text():
        text = DOCS.read_text()
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1] if END in rest else ""
        DOCS.write_text(before + block + after)
    else:
        DOCS.write_text(f"# Benchmarks\n\n{block}\n")
    log(f"wrote {DOCS.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer writes (same 3 runs)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--only", default="intake,worker,claim,console", help="comma-separated subset")
    parser.add_argument("--runs", type=int, default=3)
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
    )
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    load_start = load_average()
    facts = machine_facts()
    log(f"machine: {facts}")
    log("building the template database ...")
    token = json.loads(fixtures("template", create_empty_database(TEMPLATE_DB)))["token"]
    rows: list[Row] = []
    try:
        if "intake" in only:
            log("1. intake API")
            bench_intake(cfg, token, rows)
        if "worker" in only:
            log("2. worker throughput")
            bench_worker(cfg, rows)
        if "claim" in only:
            log("3. claim latency")
            bench_claim(cfg, rows)
        if "console" in only:
            log("4. console write list")
            bench_console(cfg, rows)
    finally:
        drop_database(TEMPLATE_DB)
    block = results_block(rows, facts, (load_start, load_average()), sys.argv[1:])
    print(block)
    if args.write_docs:
        write_docs(block)


if __name__ == "__main__":
    main()
