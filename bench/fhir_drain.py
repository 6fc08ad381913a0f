"""Drains into an independent FHIR server (SEKMET, see sekmet_server.py), each against a fresh server:

- ours: N pending Observation creates (the bench tenant, generic vendor, pointed at the server and its
  capabilities discovered first) drained by P `run_sync_worker` processes; optionally through
  bench/faultproxy.py, which loses answers after the server committed and answers some POSTs with 5xx;
- bare: the limit, the same N resources (as our worker sends them: our identifier stamped with the
  write's id) POSTed by a bare keep-alive httpx loop (bench/bare_post.py), in 1 or 2 processes;
- peer: the PyPI package `ehr-writeback` writing the same N Observations (bench/peer.py).

Every run checks what the server holds: ours must leave exactly N Observations carrying our identifier,
one per write, each the resource the ledger names (0 duplicates, 0 lost, 0 ledger mismatches), or the
run fails. The peer's resources carry no identifier of ours; they are told apart by patient and
effective time, which the bench makes unique per Observation.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psycopg
import worker
from common import PY, ROOT, clone_database, cpu_seconds, drop_database, fixtures, stop
from sekmet_server import Sekmet, Stored

SYSTEM = os.environ.get("WRITEBACK_IDENTIFIER_SYSTEM", "urn:fhir-writeback:write-id")
DB = "wbdrill_bench_fhir"


@dataclass
class Run:
    writes_per_s: float
    client_cpu_ms: float  # per write: our workers, the bare loop or the peer's processes
    server_cpu_ms: float  # per write: the FHIR server
    notes: dict[str, object] = field(default_factory=dict)


def prepare(writes: int, base_url: str, *, discover: bool = True) -> str:
    """A fresh database with `writes` pending Observation creates for a tenant pointed at `base_url`."""
    url = clone_database(DB)
    more = ["--discover"] if discover else []
    made = json.loads(fixtures("writes", url, "--count", str(writes), "--base-url", base_url, *more))
    if made["pending"] != writes:
        raise RuntimeError(f"expected {writes} pending writes, got {made}")
    return url


def resources(writes: int) -> list[dict]:
    """The resources our worker POSTs for `writes` pending writes: each payload with our identifier."""
    url = prepare(writes, "http://127.0.0.1:9/fhir", discover=False)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT uid::text, payload FROM writeback_write WHERE state = 'pending' ORDER BY id"
        ).fetchall()
    return [{**payload, "identifier": [{"system": SYSTEM, "value": uid}]} for uid, payload in rows]


@contextlib.contextmanager
def fault_proxy(upstream_port: int, drop: float, fail_before: float, fail_after: float) -> Iterator[str]:
    """bench/faultproxy.py in its own process; yields its origin (http://127.0.0.1:PORT)."""
    args = [
        PY, "bench/faultproxy.py", "--upstream", f"127.0.0.1:{upstream_port}", "--drop", str(drop),
        "--fail-before", str(fail_before), "--fail-after", str(fail_after),
    ]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"the fault proxy did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        stop(proc)


def proxy_stats(origin: str) -> dict[str, int]:
    return httpx.get(f"{origin}/_proxy/stats", timeout=10).json()


def ledger_check(url: str, stored: Stored, writes: int) -> dict[str, int]:
    """Duplicates, lost writes and ledger mismatches between our ledger and what the server holds."""
    with psycopg.connect(url) as conn:
        ledger = dict(
            conn.execute(
                "SELECT uid::text, target_resource_id FROM writeback_write WHERE state = 'committed'"
            ).fetchall()
        )
    lost = [uid for uid in ledger if uid not in stored.by_identifier]
    mismatched = [
        uid
        for uid, rid in ledger.items()
        if uid in stored.ids_by_identifier and stored.ids_by_identifier[uid] != rid
    ]
    strangers = [uid for uid in stored.by_identifier if uid not in ledger]
    return {
        "committed": len(ledger),
        "stored": sum(stored.by_identifier.values()),
        "other_observations": stored.total - sum(stored.by_identifier.values()),
        "duplicates": stored.duplicates,
        "lost": len(lost) + (writes - len(ledger)),
        "ledger_mismatches": len(mismatched) + len(strangers),
    }


def ours(
    writes: int,
    *,
    processes: int,
    concurrency: int,
    faults: tuple[float, float, float] | None = None,
) -> Run:
    """Our drain into a fresh server (through the fault proxy when `faults` = (drop, 503 before, 500
    after)). Fails unless the server holds exactly one Observation per write, each the ledger's."""
    with Sekmet() as server, contextlib.ExitStack() as stack:
        origin = stack.enter_context(fault_proxy(server.port, *faults)) if faults else None
        url = prepare(writes, f"{origin}/fhir" if origin else server.base)
        server_before = cpu_seconds(server.proc.pid)
        run = worker.drain(url, processes=processes, concurrency=concurrency, writes=writes, timeout=1800)
        server_cpu = cpu_seconds(server.proc.pid) - server_before
        stored = server.observations(SYSTEM)
        check = ledger_check(url, stored, writes)
        notes: dict[str, object] = {**check, "wall_writes_per_s": writes / run.wall_s}
        notes["attempts"] = {f"{m} {o}": n for (m, o), n in sorted(run.attempts.items())}
        if origin:
            notes["proxy"] = proxy_stats(origin)
    bad = {k: check[k] for k in ("duplicates", "lost", "ledger_mismatches", "other_observations") if check[k]}
    if bad or check["stored"] != writes:
        raise RuntimeError(f"the server does not hold exactly one Observation per write: {check}")
    return Run(run.writes_per_s, 1000 * run.worker_cpu_s / writes, 1000 * server_cpu / writes, notes)


def _together(commands: list[list[str]], env: dict[str, str] | None = None) -> list[dict]:
    """Runs the commands at once; returns each one's JSON output."""
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for cmd in commands
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(proc.args)} exited {proc.returncode}: {err[-2000:]}")
        outputs.append(json.loads(out))
    return outputs


def bare(bodies: list[dict], processes: int) -> Run:
    """The bare keep-alive loop into a fresh server, its share of the resources per process."""
    with Sekmet() as server:
        run = bare_into(f"{server.base}/Observation", server.proc.pid, bodies, processes)
        stored = server.observations(SYSTEM)
    if stored.duplicates or stored.total != len(bodies):
        raise RuntimeError(f"bare loop: the server holds {stored.total} for {len(bodies)} POSTs")
    return run


def bare_into(endpoint: str, server_pid: int, bodies: list[dict], processes: int) -> Run:
    """POSTs the resources to `endpoint` from `processes` bare loops started together; every answer
    must be a 201. `server_pid` is the server's process, for its CPU."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="wbdrill-bench-") as f:
        json.dump(bodies, f)
        f.flush()
        start_at = time.time() + 1.5  # after every process has imported httpx
        commands = [
            [PY, "bench/bare_post.py", f.name, endpoint, "--part", str(i), "--parts", str(processes),
             "--start-at", str(start_at)]
            for i in range(processes)
        ]  # fmt: skip
        server_before = cpu_seconds(server_pid)
        outputs = _together(commands)
        server_cpu = cpu_seconds(server_pid) - server_before
    statuses = sum((Counter(o["statuses"]) for o in outputs), Counter())
    if statuses != Counter({"201": len(bodies)}):
        raise RuntimeError(f"bare loop: answers {dict(statuses)}")
    span = max(o["last"] for o in outputs) - min(o["first"] for o in outputs)
    cpu = sum(o["cpu_s"] for o in outputs)
    return Run(len(bodies) / span, 1000 * cpu / len(bodies), 1000 * server_cpu / len(bodies))


def cleanup() -> None:
    drop_database(DB)
