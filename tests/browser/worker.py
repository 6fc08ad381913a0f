"""A real `manage.py run_sync_worker` process for browser journeys, pointed at the test database (the
SQLite test file, or PostgreSQL's test database), so the console and the worker meet only through the
database, as in production."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "WRITEBACK_IDLE_SLEEP_SECONDS": "0.1",
    "WRITEBACK_BACKOFF_BASE_SECONDS": "0.05",
    "WRITEBACK_BACKOFF_CAP_SECONDS": "1",
    "WRITEBACK_HTTP_READ_TIMEOUT": "3",
    "LOG_LEVEL": "WARNING",
}


def database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class WorkerProcess:
    def __init__(self, log: Path, concurrency: int = 2) -> None:
        self.log = log
        env = {**os.environ, "DATABASE_URL": database_url(), **ENV}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "run_sync_worker", "--concurrency", str(concurrency)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: b"started (concurrency" in log.read_bytes() or self.proc.poll() is not None,
            timeout=60,
            what="the worker to start",
        )
        assert self.proc.poll() is None, f"the worker exited at start:\n{self.tail()}"

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM: the worker finishes what is in flight and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"the worker did not stop on SIGTERM:\n{self.tail()}") from None
