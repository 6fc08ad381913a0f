"""Intake API throughput: vitals events per second through gunicorn (2 sync workers).

The server is `gunicorn writeback.wsgi:application -w 2 -k sync` on a free port; the client is this
process, a few threads each with its own httpx.Client, posting the spec's vitals example (6 measurements,
so 6 writes per event) with a fresh idempotency key each, for a fixed time after a warm-up. Only 201
answers count; anything else is reported as an error.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import psycopg
from common import PY, ROOT, children_of, cpu_seconds, django_env, free_port, stop, wait_for_port
from events import PATIENTS, vitals_event

# The bare insert's table (bench/bare_api.py; defined here too, so the bench need not import Django).
BARE_TABLE = "bench_bare_event"
BARE_CREATE = f"""CREATE TABLE {BARE_TABLE} (id bigserial PRIMARY KEY, key varchar(200) UNIQUE NOT NULL,
    type varchar(64) NOT NULL, occurred_at timestamptz NOT NULL, data jsonb NOT NULL)"""


def bare_event(key: str, n: int) -> dict:
    """What the bare insert takes: 4 fields (about 170 bytes, as in limits.md)."""
    return {
        "key": key,
        "type": "vitals.recorded",
        "occurred_at": "2026-11-20T14:03:00-05:00",
        "data": {"patient": f"pat-{n}", "systolic": 128, "diastolic": 82, "unit": "mmHg"},
    }


def _vitals(key: str, n: int, *, measurements: int) -> dict:
    return vitals_event(key, n, measurements=measurements)


@dataclass
class IntakeRun:
    events_per_s: float
    statuses: Counter
    latency_ms: float  # median latency of one POST
    server_cpu_ms: float = 0.0  # gunicorn workers' CPU per stored event
    client_cpu_ms: float = 0.0  # this process's CPU per stored event (the load generator)


def gunicorn(
    database_url: str, port: int, conn_max_age: int, app: str = "writeback.wsgi:application"
) -> tuple[subprocess.Popen, str]:
    """The server (the product, or `bare_api:application` from bench/), and the file its stderr goes to."""
    # writeback.wsgi refuses to serve on the development key with DEBUG off (as in production).
    env = django_env(database_url, CONN_MAX_AGE=str(conn_max_age), SECRET_KEY=secrets.token_urlsafe(64))
    chdir = ["--chdir", str(ROOT / "bench")] if app.startswith("bare_api") else []
    args = [
        PY, "-m", "gunicorn", app, *chdir,
        "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
    ]  # fmt: skip
    with tempfile.NamedTemporaryFile(prefix="wbdrill-bench-gunicorn-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    return proc, log.name


def post_for(
    url: str,
    token: str,
    seconds: float,
    threads: int,
    tag: str,
    *,
    path: str = "/api/v1/events",
    body: Callable[[str, int], dict] | None = None,
) -> IntakeRun:
    """Posts `body(key, patient)` (default: the vitals event) from `threads` clients for `seconds`;
    returns the rate of 201 answers."""
    body = body or vitals_event
    statuses: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = [0.0]
    # The clock starts when every client is ready: making an httpx.Client can take longer than a short
    # run on a loaded machine.
    start_line = threading.Barrier(
        threads + 1, action=lambda: stop_at.__setitem__(0, time.monotonic() + seconds)
    )

    def client(t: int) -> None:
        headers = {"Authorization": f"Token {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            start_line.wait()
            i = 0
            while time.monotonic() < stop_at[0]:
                content = body(f"{tag}-{t}-{i}", PATIENTS[(t * 7919 + i) % len(PATIENTS)])
                began = time.monotonic()
                status = http.post(path, json=content).status_code
                with lock:
                    statuses[status] += 1
                    latencies.append(time.monotonic() - began)
                i += 1

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start_line.wait()
    began = time.monotonic()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - began
    latencies.sort()
    return IntakeRun(
        events_per_s=statuses[201] / elapsed,
        statuses=statuses,
        latency_ms=1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
    )


def measure(
    database_url: str,
    token: str,
    *,
    conn_max_age: int,
    seconds: float,
    threads: int,
    tag: str,
    measurements: int = 6,
    bare: bool = False,
) -> IntakeRun:
    """Events/s through gunicorn: the product's intake API (vitals events of `measurements`
    measurements), or with `bare` the bare DRF insert of bench/bare_api.py (its own table)."""
    port = free_port()
    if bare:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {BARE_TABLE}")
            conn.execute(BARE_CREATE)
        path, body = "/api/events", bare_event
        server, server_log = gunicorn(database_url, port, conn_max_age, app="bare_api:application")
    else:
        path, body = "/api/v1/events", partial(_vitals, measurements=measurements)
        server, server_log = gunicorn(database_url, port, conn_max_age)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        # Both gunicorn workers load the app.
        warm = post_for(url, token, 1.0, threads, f"{tag}-warm", path=path, body=body)
        if warm.statuses[201] == 0:
            raise RuntimeError(f"warm-up got no 201: {dict(warm.statuses)}; see {server_log}")
        workers = children_of(server.pid)
        server_before = sum(cpu_seconds(pid) for pid in workers)
        client_before = time.process_time()
        result = post_for(url, token, seconds, threads, tag, path=path, body=body)
        stored = max(1, result.statuses[201])
        result.server_cpu_ms = 1000 * (sum(cpu_seconds(pid) for pid in workers) - server_before) / stored
        result.client_cpu_ms = 1000 * (time.process_time() - client_before) / stored
        errors = {s: n for s, n in result.statuses.items() if s != 201}
        if errors:
            raise RuntimeError(f"non-201 answers during the run: {errors}; see {server_log}")
    finally:
        stop(server)
    Path(server_log).unlink(missing_ok=True)  # kept only when something went wrong
    return result
