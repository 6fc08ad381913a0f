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
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import PY, ROOT, children_of, cpu_seconds, django_env, free_port, stop, wait_for_port
from events import PATIENTS, vitals_event


@dataclass
class IntakeRun:
    events_per_s: float
    statuses: Counter
    latency_ms: float  # median latency of one POST
    server_cpu_ms: float = 0.0  # gunicorn workers' CPU per stored event
    client_cpu_ms: float = 0.0  # this process's CPU per stored event (the load generator)


def gunicorn(database_url: str, port: int, conn_max_age: int) -> tuple[subprocess.Popen, str]:
    """The server, and the file its stderr goes to."""
    # writeback.wsgi refuses to serve on the development key with DEBUG off (as in production).
    env = django_env(database_url, CONN_MAX_AGE=str(conn_max_age), SECRET_KEY=secrets.token_urlsafe(64))
    args = [
        PY, "-m", "gunicorn", "writeback.wsgi:application",
        "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
    ]  # fmt: skip
    with tempfile.NamedTemporaryFile(prefix="wbdrill-bench-gunicorn-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    return proc, log.name


def post_for(url: str, token: str, seconds: float, threads: int, tag: str) -> IntakeRun:
    """Posts vitals events from `threads` clients for `seconds`; returns the rate of 201 answers."""
    statuses: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start_line = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def client(t: int) -> None:
        headers = {"Authorization": f"Token {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            start_line.wait()
            i = 0
            while time.monotonic() < stop_at[0]:
                body = vitals_event(f"{tag}-{t}-{i}", PATIENTS[(t * 7919 + i) % len(PATIENTS)])
                began = time.monotonic()
                status = http.post("/api/v1/events", json=body).status_code
                with lock:
                    statuses[status] += 1
                    latencies.append(time.monotonic() - began)
                i += 1

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    stop_at[0] = time.monotonic() + seconds
    began = time.monotonic()
    start_line.wait()
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
    database_url: str, token: str, *, conn_max_age: int, seconds: float, threads: int, tag: str
) -> IntakeRun:
    port = free_port()
    server, server_log = gunicorn(database_url, port, conn_max_age)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        warm = post_for(url, token, 1.0, threads, f"{tag}-warm")  # both gunicorn workers load the app
        if warm.statuses[201] == 0:
            raise RuntimeError(f"warm-up got no 201: {dict(warm.statuses)}; see {server_log}")
        workers = children_of(server.pid)
        server_before = sum(cpu_seconds(pid) for pid in workers)
        client_before = time.process_time()
        result = post_for(url, token, seconds, threads, tag)
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
