"""What every benchmark shares: databases, processes, timing statistics, machine facts.

Databases are made by cloning one migrated template (`CREATE DATABASE ... TEMPLATE`), so every run starts
from the same state in well under a second. Names start with `wbdrill_bench` so they never collide with
other test databases on the same server.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PG_SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
TEMPLATE_DB = "wbdrill_bench_template"
# Third-party programs the benchmarks drive get virtualenvs of their own here (gitignored).
TOOLS = ROOT / ".bench"
QUIET_ENV = {"LOG_LEVEL": "WARNING", "DEBUG": "0", "PYTHONUNBUFFERED": "1"}


# Benchmarks may run from several checkouts on one PostgreSQL at once: each run's databases carry its own
# tag (inherited by the scripts it starts), so one run never drops another's. The million-row database
# is the exception: it is a cache, shared on purpose.
RUN_TAG = os.environ.setdefault("BENCH_RUN_TAG", str(os.getpid()))
SHARED = "wbdrill_bench_million_"


def db_name(name: str) -> str:
    """`wbdrill_bench_x` as this run's database: `wbdrill_bench_<tag>_x`."""
    prefix = "wbdrill_bench_"
    if not name.startswith(prefix) or name.startswith(SHARED) or name.startswith(f"{prefix}{RUN_TAG}_"):
        return name
    return f"{prefix}{RUN_TAG}_{name.removeprefix(prefix)}"


def pg_url(name: str) -> str:
    return f"{PG_SERVER}/{db_name(name)}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(pg_url("postgres"), autocommit=True)


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name(name)}" WITH (FORCE)')


def clone_database(name: str, template: str = TEMPLATE_DB) -> str:
    """A fresh copy of the template; returns its URL."""
    drop_database(name)
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{db_name(name)}" TEMPLATE "{db_name(template)}"')
    return pg_url(name)


def create_empty_database(name: str) -> str:
    drop_database(name)
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{db_name(name)}"')
    return pg_url(name)


def django_env(database_url: str, **more: str) -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV, "DATABASE_URL": database_url, **more}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run(args: Sequence[str], env: dict[str, str], *, timeout: float = 600) -> str:
    """Runs a command from the project root; returns its stdout, raises with its output on failure."""
    done = subprocess.run(
        list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def fixtures(command: str, database_url: str, *args: str, timeout: float = 900) -> str:
    """Runs `bench/fixtures.py COMMAND` against a database (a separate process: Django reads
    DATABASE_URL once, at start-up)."""
    return run([PY, "bench/fixtures.py", command, *args], django_env(database_url), timeout=timeout).strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a live process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def rss_mib(pid: int) -> float | None:
    """Resident set size of a live process in MiB (Linux /proc), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def ensure_venv(folder: Path, requirement: str, distribution: str, version: str) -> Path:
    """A virtualenv of its own for a third-party package whose pins differ from ours (made with this
    Python, then `pip install requirement`), reused while it holds `distribution==version`.
    Returns its Python."""
    python = folder / "bin" / "python"
    probe = [str(python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
        if found == version:
            return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True)
    found = subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
    if found != version:
        raise RuntimeError(f"{folder}: {distribution} {found or 'missing'} after installing {requirement}")
    return python


def waited_children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Measure:
    """Repeated measurements of one quantity: median (min-max) over the runs."""

    label: str
    unit: str
    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def cell(self) -> str:
        if not self.values:
            return "n/a"
        digits = 0 if self.median >= 100 else 1 if self.median >= 10 else 2
        fmt = f"{{:,.{digits}f}}"
        if len(self.values) == 1:
            return f"{fmt.format(self.values[0])} {self.unit} (1 run)"
        spread = f"{fmt.format(min(self.values))}–{fmt.format(max(self.values))}"
        return f"**{fmt.format(self.median)}** {self.unit} ({spread}, n={len(self.values)})"


def repeat(measure: Measure, runs: int, once: Callable[[int], float], log: Callable[[str], None]) -> Measure:
    for i in range(runs):
        value = once(i)
        measure.values.append(value)
        log(f"  {measure.label} run {i + 1}/{runs}: {value:,.2f} {measure.unit}")
    return measure


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _git_head() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "writeback", "adapters"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"commit {head}" + (" with local changes in writeback/ or adapters/" if dirty else "")


def machine_facts() -> dict[str, str]:
    import django
    import httpx

    with _admin() as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    return {
        "code": _git_head(),
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "psycopg": psycopg.__version__,
        "httpx": httpx.__version__,
        "postgresql": pg_version,
        "wrk": shutil.which("wrk") or "not installed (a Python httpx client drives the API)",
    }
