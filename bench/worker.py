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

import json
import subprocess
import time
from dataclasses import dataclass

import httpx
import psycopg
from common import PY, ROOT, clone_database, cpu_seconds, django_env, fixtures, stop, waited_children_cpu

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


def measure(sim: Simulator, *, processes: int, concurrency: int, writes: int) -> WorkerRun:
    url = clone_database("wbdrill_bench_worker")
    sim.reset()
    made = json.loads(fixtures("writes", url, "--count", str(writes), "--base-url", sim.fhir))
    assert made["pending"] == writes, made
    env = django_env(url, WRITEBACK_IDLE_SLEEP_SECONDS="0.05", WRITEBACK_WORKER_CONCURRENCY=str(concurrency))
    args = [PY, "manage.py", "run_sync_worker", "--until-idle", "--concurrency", str(concurrency)]
    children_before, sim_before = waited_children_cpu(), cpu_seconds(sim.proc.pid)
    began = time.monotonic()
    procs = [
        subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"worker exited {proc.returncode}: {err[-2000:]}")
    wall = time.monotonic() - began
    worker_cpu = waited_children_cpu() - children_before
    sim_cpu = cpu_seconds(sim.proc.pid) - sim_before
    with psycopg.connect(url) as conn:
        committed, first, last = conn.execute(
            "SELECT count(*), min(state_changed_at), max(state_changed_at) FROM writeback_write "
            "WHERE state = 'committed'"
        ).fetchone()
        attempts = conn.execute(
            "SELECT count(*) FROM writeback_writeattempt WHERE method = 'POST'"
        ).fetchone()[0]
    if committed != writes:
        raise RuntimeError(f"only {committed} of {writes} writes committed")
    stored = sim.resources() - SEED_RESOURCES
    if stored != writes:
        raise RuntimeError(f"the simulator holds {stored} new resources for {writes} writes")
    span = (last - first).total_seconds()
    return WorkerRun(
        writes_per_s=(writes - 1) / span if span > 0 else float("nan"),
        wall_writes_per_s=writes / wall,
        attempts_per_write=attempts / writes,
        worker_cpu_ms=1000 * worker_cpu / writes,
        simulator_cpu_ms=1000 * sim_cpu / writes,
    )
