"""Worker throughput: writes per second draining N pending writes into the EHR simulator.

The simulator runs as its own process (`manage.py run_ehr_simulator --profile generic`), reset to the
demo seed before each run. Each run gets a fresh database with N pending Observation writes spread over
the 200 consented demo patients, then starts P `run_sync_worker --until-idle --concurrency K` processes
and waits for them to exit. Rate = (N - 1) / (last commit - first commit), from the ledger's
state_changed_at, so process start-up (about a second of Django set-up) is not counted; the wall-clock
rate including start-up is kept as a note. A run counts only if every write committed and the simulator
holds exactly N new resources.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import psycopg
from common import (
    PY,
    ROOT,
    clone_database,
    cpu_seconds,
    django_env,
    fixtures,
    rss_mib,
    stop,
    waited_children_cpu,
)

SEED_RESOURCES = 603  # the demo seed: 200 patients x (patient, encounter, task) + 3


@dataclass
class Simulator:
    proc: subprocess.Popen
    origin: str
    fhir: str

    def reset(self) -> None:
        httpx.post(f"{self.origin}/_sim/reset", json={"seed": "demo"}, timeout=30).raise_for_status()

    def resources(self) -> int:
        return httpx.get(f"{self.origin}/_sim/health", timeout=30).json()["resources"]


def start_simulator(database_url: str) -> Simulator:
    proc = subprocess.Popen(
        [PY, "manage.py", "run_ehr_simulator", "--port", "0", "--profile", "generic", "--seed", "demo"],
        cwd=ROOT, env=django_env(database_url), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    if " ready: " not in line:
        stop(proc)
        raise RuntimeError(f"simulator did not start: {line!r}")
    origin = line.split(" origin ")[1].split()[0]
    fhir = line.split(" fhir ")[1].split()[0]
    return Simulator(proc, origin, fhir)


@dataclass
class WorkerRun:
    writes_per_s: float
    wall_writes_per_s: float
    attempts_per_write: float
    worker_cpu_ms: float  # the worker processes' CPU per write
    simulator_cpu_ms: float  # the simulator's CPU per write


@dataclass
class Drain:
    """P `run_sync_worker --until-idle` processes draining a prepared database, and what the ledger says."""

    writes: int
    committed: int
    first_commit: datetime
    last_commit: datetime
    wall_s: float  # from starting the processes to the last one's exit (Django start-up included)
    worker_cpu_s: float
    attempts: Counter  # (method, outcome) -> attempts recorded
    rss: list[tuple[float, int, list[float | None]]] = field(default_factory=list)  # (t, committed, MiB each)

    @property
    def writes_per_s(self) -> float:
        """(N - 1) / (last commit - first commit): process start-up (about a second) is not counted."""
        span = (self.last_commit - self.first_commit).total_seconds()
        return (self.committed - 1) / span if span > 0 else float("nan")


def _committed(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM writeback_write WHERE state = 'committed'").fetchone()[0]


def drain(
    url: str,
    *,
    processes: int,
    concurrency: int,
    writes: int,
    env: dict[str, str] | None = None,
    sample_every: float = 0.0,
    timeout: float = 900,
) -> Drain:
    """Starts the workers, waits for them to exit, checks that all `writes` committed. With
    `sample_every`, also samples each worker's RSS (and the committed count) that often."""
    worker_env = django_env(
        url,
        WRITEBACK_IDLE_SLEEP_SECONDS="0.05",
        WRITEBACK_WORKER_CONCURRENCY=str(concurrency),
        **(env or {}),
    )
    args = [PY, "manage.py", "run_sync_worker", "--until-idle", "--concurrency", str(concurrency)]
    children_before = waited_children_cpu()
    began = time.monotonic()
    rss: list[tuple[float, int, list[float | None]]] = []
    # stderr goes to files: a pipe nobody reads while another worker is waited for could fill and stall it.
    with contextlib.ExitStack() as files:
        logs = [files.enter_context(tempfile.TemporaryFile()) for _ in range(processes)]
        procs = [
            subprocess.Popen(args, cwd=ROOT, env=worker_env, stdout=subprocess.DEVNULL, stderr=log)
            for log in logs
        ]
        for proc in procs:
            _wait(proc, rss, procs, url, sample_every, began, timeout)
        wall = time.monotonic() - began
        worker_cpu = waited_children_cpu() - children_before
        for proc, log in zip(procs, logs, strict=True):
            if proc.returncode != 0:
                log.seek(0)
                raise RuntimeError(
                    f"worker exited {proc.returncode}: {log.read()[-2000:].decode(errors='replace')}"
                )
    with psycopg.connect(url) as conn:
        committed, first, last = conn.execute(
            "SELECT count(*), min(state_changed_at), max(state_changed_at) FROM writeback_write "
            "WHERE state = 'committed'"
        ).fetchone()
        attempts = Counter(
            {
                (method, outcome): n
                for method, outcome, n in conn.execute(
                    "SELECT method, outcome, count(*) FROM writeback_writeattempt GROUP BY 1, 2"
                )
            }
        )
    if committed != writes:
        raise RuntimeError(f"only {committed} of {writes} writes committed")
    return Drain(writes, committed, first, last, wall, worker_cpu, attempts, rss)


def _wait(
    proc: subprocess.Popen,
    rss: list,
    procs: list[subprocess.Popen],
    url: str,
    sample_every: float,
    began: float,
    timeout: float,
) -> None:
    """Waits for one worker, sampling every worker's RSS meanwhile when asked."""
    while proc.poll() is None:
        if time.monotonic() - began > timeout:
            for p in procs:
                p.kill()
            raise RuntimeError(f"the workers were still running after {timeout:.0f} s")
        if sample_every > 0:
            rss.append((time.monotonic() - began, _committed(url), [rss_mib(p.pid) for p in procs]))
        time.sleep(sample_every or 0.1)


def measure(sim: Simulator, *, processes: int, concurrency: int, writes: int) -> WorkerRun:
    url = clone_database("wbdrill_bench_worker")
    sim.reset()
    made = json.loads(fixtures("writes", url, "--count", str(writes), "--base-url", sim.fhir))
    assert made["pending"] == writes, made
    sim_before = cpu_seconds(sim.proc.pid)
    run = drain(url, processes=processes, concurrency=concurrency, writes=writes)
    sim_cpu = cpu_seconds(sim.proc.pid) - sim_before
    stored = sim.resources() - SEED_RESOURCES
    if stored != writes:
        raise RuntimeError(f"the simulator holds {stored} new resources for {writes} writes")
    posts = sum(n for (method, _), n in run.attempts.items() if method == "POST")
    return WorkerRun(
        writes_per_s=run.writes_per_s,
        wall_writes_per_s=writes / run.wall_s,
        attempts_per_write=posts / writes,
        worker_cpu_ms=1000 * run.worker_cpu_s / writes,
        simulator_cpu_ms=1000 * sim_cpu / writes,
    )
