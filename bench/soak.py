"""Soak: the whole system running for N minutes under steady load, with faults at a low rate.

    python bench/soak.py --minutes 30 [--rate 2] [--faults SPEC] [--write-docs]

What runs, each as its own process on this machine, against a fresh PostgreSQL database (BENCH_PG):
- the EHR simulator (generic profile) with faults at a low rate (default: 1 % 5xx, 1 % 429,
  0.5 % dropped connections, 0.5 % answers lost after commit);
- gunicorn (2 sync workers) serving the intake API and the console;
- two `run_sync_worker` processes (concurrency 8);
- this process: 4 clients posting vitals events (1 to 3 measurements) at a steady --rate per second
  in all,
  and a console poller signed in as an admin, loading the overview and the write list every 2 s.

Every minute it records each worker's RSS (and gunicorn's, master and workers together), the intake
latency p50 / p95 and the console's, the answers that were not 201 / 200, the ledger's backlog
(writes not yet final) and the faults that fired. At the end intake stops, the workers drain what is
left, and the run is checked: every write committed exactly once at the target (0 duplicates, 0
lost) and the audit chain verifies. The minutes go to docs/soak.csv and docs/soak.svg (a hand-drawn
SVG: RSS and latency per minute), the summary table to stdout; --write-docs also puts it into
docs/benchmarks.md between its soak markers.

Flat is the verdict to look for: RSS, latency and backlog per minute should not climb with time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import intake
import psycopg
import worker
from common import (
    PY,
    ROOT,
    children_of,
    create_empty_database,
    django_env,
    drop_database,
    fixtures,
    free_port,
    load_average,
    rss_mib,
    run,
    stop,
    wait_for_port,
)
from events import PATIENTS, vitals_event

DOCS = ROOT / "docs"
CSV = DOCS / "soak.csv"
SVG = DOCS / "soak.svg"
BENCHMARKS = DOCS / "benchmarks.md"
START, END = "<!-- bench:soak:start -->", "<!-- bench:soak:end -->"
DEFAULT_FAULTS = "error_5xx=0.01,rate_limit=0.01,drop_connection=0.005,timeout_after_commit=0.005,seed=7"
ADMIN, PASSWORD = "ada.admin", "bench-only"  # bench/fixtures.py template
IDENTIFIER_SYSTEM = "urn:fhir-writeback:write-id"
CONSOLE_PAGES = ("/", "/writes/")
INTAKE_SENDERS = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Window:
    """What happened during one minute."""

    intake_ms: list[float] = field(default_factory=list)
    intake_status: Counter = field(default_factory=Counter)
    console_ms: list[float] = field(default_factory=list)
    console_status: Counter = field(default_factory=Counter)


@dataclass
class Minute:
    minute: int
    worker1_rss_mib: float
    worker2_rss_mib: float
    web_rss_mib: float
    events: int
    intake_p50_ms: float
    intake_p95_ms: float
    intake_errors: int
    console_p50_ms: float
    console_p95_ms: float
    console_errors: int
    committed: int
    backlog: int
    faults_fired: int


def _p(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Load:
    """The intake client and the console poller, each on its own thread, recording into the current
    minute's window."""

    def __init__(self, base: str, token: str, rate: float) -> None:
        self.base, self.token, self.rate = base, token, rate
        self.window = Window()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sent = 0
        # Several senders, each at its share of the rate and out of phase: one slow answer does not hold
        # the others back, so the offered load stays steady however loaded the machine is.
        self.threads = [
            *(
                threading.Thread(target=self._intake, args=(t,), name=f"soak-intake-{t}")
                for t in range(INTAKE_SENDERS)
            ),
            threading.Thread(target=self._console, name="soak-console"),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=60)

    def take(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
        return window

    def _intake(self, sender: int) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        period = INTAKE_SENDERS / self.rate
        next_at = time.monotonic() + sender * period / INTAKE_SENDERS
        i = 0
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as http:
            while not self.stopping.wait(max(0.0, next_at - time.monotonic())):
                n = i * INTAKE_SENDERS + sender
                body = vitals_event(f"soak-{n}", PATIENTS[(n * 7919) % len(PATIENTS)], measurements=1 + n % 3)
                began = time.perf_counter()
                try:
                    status = http.post("/api/v1/events", json=body).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                took = 1000 * (time.perf_counter() - began)
                with self.lock:
                    self.window.intake_ms.append(took)
                    self.window.intake_status[status] += 1
                    self.sent += 1
                i += 1
                # A steady rate, not as fast as possible: a slow answer is not made up by a burst.
                next_at = max(next_at + period, time.monotonic())

    def _console(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            intake_sign_in(http)
            i = 0
            while not self.stopping.is_set():
                page = CONSOLE_PAGES[i % len(CONSOLE_PAGES)]
                began = time.perf_counter()
                try:
                    status = http.get(page).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                took = 1000 * (time.perf_counter() - began)
                with self.lock:
                    self.window.console_ms.append(took)
                    self.window.console_status[status] += 1
                i += 1
                self.stopping.wait(2.0)


def intake_sign_in(http: httpx.Client) -> None:
    form = http.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    answer = http.post(
        "/login/",
        data={"username": ADMIN, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{http.base_url}login/"},
    )
    if answer.status_code != 302:
        raise SystemExit(f"console sign-in answered {answer.status_code}")


def _ledger(url: str) -> tuple[int, int, Counter]:
    with psycopg.connect(url) as conn:
        states = Counter(
            dict(conn.execute("SELECT state, count(*) FROM writeback_write GROUP BY 1").fetchall())
        )
    final = ("committed", "conflict", "failed_terminal", "resolved", "rejected", "compensated")
    backlog = sum(n for s, n in states.items() if s not in final)
    return states["committed"], backlog, states


def _faults_fired(sim: worker.Simulator) -> int:
    fired = httpx.get(f"{sim.origin}/_sim/faults", timeout=10).json().get("fired", {})
    return sum(fired.values())


def _tree_rss(pid: int) -> float:
    return sum(rss_mib(p) or 0.0 for p in (pid, *children_of(pid)))


def soak(minutes: float, rate: float, faults: str) -> tuple[list[Minute], dict]:
    url = create_empty_database("wbdrill_bench_soak")
    procs: list[subprocess.Popen] = []
    sim = None
    try:
        log("building the database (migrate, tenant, people, consents) ...")
        token = json.loads(fixtures("template", url))["token"]
        sim = worker.start_simulator(url)
        sim.reset()
        fixtures("writes", url, "--count", "1", "--base-url", sim.fhir, "--max-concurrency", "8")
        port = free_port()
        web, web_log = intake.gunicorn(url, port, conn_max_age=600)
        procs.append(web)
        wait_for_port(port)
        logs = []
        for _ in range(2):
            with tempfile.NamedTemporaryFile(
                prefix="wbdrill-bench-soak-worker-", suffix=".log", delete=False
            ) as out:
                logs.append(out.name)
                procs.append(
                    subprocess.Popen(
                        [PY, "manage.py", "run_sync_worker", "--concurrency", "8"],
                        cwd=ROOT,
                        env=django_env(url),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        workers = procs[1:]
        spec = dict(part.split("=", 1) for part in faults.split(",") if part.strip())
        httpx.put(f"{sim.origin}/_sim/faults", json=spec, timeout=10).raise_for_status()
        load = Load(f"http://127.0.0.1:{port}", token, rate)
        log(f"soaking for {minutes:g} minute(s): {rate:g} events/s, faults {faults}")
        load_start = load_average()
        load.start()
        rows: list[Minute] = []
        began = time.monotonic()
        for m in range(1, int(round(minutes)) + 1):
            time.sleep(max(0.0, began + 60 * m - time.monotonic()))
            window = load.take()
            committed, backlog, _ = _ledger(url)
            rss = [rss_mib(p.pid) or float("nan") for p in workers]
            dead = [p.pid for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"process(es) {dead} exited during the soak; logs: {logs}, {web_log}")
            row = Minute(
                minute=m,
                worker1_rss_mib=rss[0],
                worker2_rss_mib=rss[1],
                web_rss_mib=_tree_rss(web.pid),
                events=window.intake_status[201],
                intake_p50_ms=_p(window.intake_ms, 50),
                intake_p95_ms=_p(window.intake_ms, 95),
                intake_errors=sum(n for s, n in window.intake_status.items() if s != 201),
                console_p50_ms=_p(window.console_ms, 50),
                console_p95_ms=_p(window.console_ms, 95),
                console_errors=sum(n for s, n in window.console_status.items() if s != 200),
                committed=committed,
                backlog=backlog,
                faults_fired=_faults_fired(sim),
            )
            rows.append(row)
            log(
                f"minute {m}: RSS {row.worker1_rss_mib:.0f}/{row.worker2_rss_mib:.0f} MiB, web "
                f"{row.web_rss_mib:.0f} MiB, intake p50 {row.intake_p50_ms:.0f} ms "
                f"p95 {row.intake_p95_ms:.0f} ms, errors {row.intake_errors}+{row.console_errors}, "
                f"backlog {row.backlog}"
            )
        load.stop()
        httpx.delete(f"{sim.origin}/_sim/faults", timeout=10)
        summary = _drain_and_check(url, sim, load_start)
        summary["events_sent"] = load.sent
        return rows, summary
    finally:
        for proc in reversed(procs):
            stop(proc)
        if sim is not None:
            worker.stop(sim.proc)
        drop_database("wbdrill_bench_soak")


def _drain_and_check(url: str, sim: worker.Simulator, load_start: str) -> dict:
    """The workers finish the backlog (a write the faults left waiting for its backoff included); then
    every write must be committed exactly once at the target, and the audit chain must verify."""
    deadline = time.monotonic() + 600
    while True:
        committed, backlog, states = _ledger(url)
        if backlog == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    stored = httpx.get(f"{sim.origin}/_sim/resources", params={"type": "Observation"}, timeout=120).json()
    per_write = Counter(
        ident["value"]
        for resource in stored["resources"]
        for ident in resource.get("identifier", [])
        if ident.get("system") == IDENTIFIER_SYSTEM
    )
    with psycopg.connect(url) as conn:
        uids = {str(u) for (u,) in conn.execute("SELECT uid FROM writeback_write WHERE state = 'committed'")}
    duplicates = sum(n - 1 for n in per_write.values() if n > 1)
    lost = len(uids - set(per_write))
    stray = len(set(per_write) - uids)
    # verify_audit_chain exits non-zero on any break, which `run` raises on.
    chain = run([PY, "manage.py", "verify_audit_chain"], django_env(url)).strip().splitlines()[-1]
    return {
        "states": dict(states),
        "backlog_after_drain": backlog,
        "duplicates_at_target": duplicates,
        "lost": lost,
        "at_target_not_committed": stray,
        "audit_chain": chain,
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }


# -- output --------------------------------------------------------------------------------------------


def write_csv(rows: list[Minute]) -> None:
    names = list(Minute.__dataclass_fields__)
    lines = [",".join(names)]
    for row in rows:
        values = [getattr(row, n) for n in names]
        lines.append(",".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in values))
    CSV.write_text("\n".join(lines) + "\n")


def write_svg(rows: list[Minute], title: str) -> None:
    """Two panels over the minutes: RSS (MiB) of each worker and of the web server, and intake latency
    p50 / p95 (ms). Drawn by hand: no plotting library is needed."""
    width, height, left, right, panel, gap, top = 760, 520, 70, 150, 180, 60, 40
    xs = [r.minute for r in rows]
    x_max = max(xs + [1])

    def x(m: float) -> float:
        return left + (width - left - right) * (m / x_max)

    def panel_svg(y0: int, series: list[tuple[str, str, list[float]]], unit: str) -> list[str]:
        values = [v for _, _, vs in series for v in vs if v == v]
        top_value = max(values + [1.0]) * 1.15

        def y(v: float) -> float:
            return y0 + panel - panel * (v / top_value)

        out = [
            f'<line x1="{left}" y1="{y0 + panel}" x2="{width - right}" y2="{y0 + panel}" stroke="#888"/>',
            f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y0 + panel}" stroke="#888"/>',
        ]
        for i in range(5):
            v = top_value * i / 4
            out.append(
                f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.0f}</text>'
            )
            out.append(
                f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" stroke="#eee"/>'
            )
        out.append(
            f'<text x="14" y="{y0 + panel / 2}" font-size="12" transform="rotate(-90 14 {y0 + panel / 2})" '
            f'text-anchor="middle">{unit}</text>'
        )
        for i, (name, colour, vs) in enumerate(series):
            points = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in zip(xs, vs, strict=True) if v == v)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
            for m, v in zip(xs, vs, strict=True):
                if v == v:
                    out.append(f'<circle cx="{x(m):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
            ly = y0 + 14 + 18 * i
            out.append(f'<rect x="{width - right + 12}" y="{ly - 9}" width="12" height="3" fill="{colour}"/>')
            out.append(f'<text x="{width - right + 30}" y="{ly - 4}" font-size="12">{name}</text>')
        return out

    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{title}</text>',
    ]
    body += panel_svg(
        top,
        [
            ("worker 1 RSS", "#1f77b4", [r.worker1_rss_mib for r in rows]),
            ("worker 2 RSS", "#ff7f0e", [r.worker2_rss_mib for r in rows]),
            ("web RSS (all)", "#2ca02c", [r.web_rss_mib for r in rows]),
        ],
        "MiB",
    )
    y1 = top + panel + gap
    body += panel_svg(
        y1,
        [
            ("intake p50", "#9467bd", [r.intake_p50_ms for r in rows]),
            ("intake p95", "#d62728", [r.intake_p95_ms for r in rows]),
            ("console p95", "#8c564b", [r.console_p95_ms for r in rows]),
        ],
        "ms",
    )
    for m in xs:
        body.append(
            f'<text x="{x(m):.1f}" y="{y1 + panel + 16}" font-size="11" text-anchor="middle">{m}</text>'
        )
    body.append(
        f'<text x="{(left + width - right) / 2}" y="{y1 + panel + 34}" font-size="12" '
        'text-anchor="middle">minute</text>'
    )
    body.append("</svg>")
    SVG.write_text("\n".join(body) + "\n")


def markdown(rows: list[Minute], summary: dict, argv: list[str], rate: float, faults: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        "| Minute | Worker 1 RSS (MiB) | Worker 2 RSS (MiB) | Web RSS (MiB) | Events stored "
        "| Intake p50 / p95 (ms) | Intake errors | Console p50 / p95 (ms) | Console errors "
        "| Committed (total) | Backlog | Faults fired (total) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r.minute} | {r.worker1_rss_mib:.1f} | {r.worker2_rss_mib:.1f} | {r.web_rss_mib:.1f} "
        f"| {r.events} | "
        f"{r.intake_p50_ms:.0f} / {r.intake_p95_ms:.0f} | {r.intake_errors} | {r.console_p50_ms:.0f} / "
        f"{r.console_p95_ms:.0f} | {r.console_errors} | {r.committed} | {r.backlog} | {r.faults_fired} |"
        for r in rows
    ]
    first, last = rows[0], rows[-1]
    growth = [
        f"worker 1 {last.worker1_rss_mib - first.worker1_rss_mib:+.1f} MiB",
        f"worker 2 {last.worker2_rss_mib - first.worker2_rss_mib:+.1f} MiB",
        f"web {last.web_rss_mib - first.web_rss_mib:+.1f} MiB",
    ]
    s = summary
    return f"""{START}
### Soak: last run ({when})

Command: `python bench/soak.py {" ".join(argv)}` (from the project root). Intake offered at {rate:g}
events/s by {INTAKE_SENDERS} clients (vitals, 1 to 3 measurements), 2 workers (concurrency 8),
gunicorn with 2 sync workers, a console poller every 2 s, simulator faults `{faults}`.
Per minute in `docs/soak.csv`, graph in `docs/soak.svg`. Load average (1, 5, 15 min):
{s["load_average_start"]} at the start, {s["load_average_end"]} at the end.

{header}
{chr(10).join(lines)}

RSS from the first to the last minute: {", ".join(growth)}. After intake stopped and the workers
drained: {s["events_sent"]} events sent, ledger {s["states"]}, backlog {s["backlog_after_drain"]};
at the target {s["duplicates_at_target"]} duplicates, {s["lost"]} committed writes missing,
{s["at_target_not_committed"]} resources of writes not committed; audit chain: {s["audit_chain"]}.

![Soak: RSS and latency per minute](soak.svg)
{END}"""


def write_docs(block: str) -> None:
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if START in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1] if END in rest else ""
        BENCHMARKS.write_text(before + block + after)
    else:
        BENCHMARKS.write_text(text.rstrip("\n") + f"\n\n## Soak\n\n{block}\n")
    log(f"wrote the soak block of {BENCHMARKS.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30, help="how long to soak (whole minutes)")
    parser.add_argument("--rate", type=float, default=2.0, help="events posted per second (4 clients)")
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="the simulator's fault settings")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if args.minutes < 1 or args.rate <= 0:
        parser.error("--minutes must be at least 1 and --rate positive")
    rows, summary = soak(args.minutes, args.rate, args.faults)
    write_csv(rows)
    write_svg(rows, f"Soak: {len(rows)} min, {args.rate:g} events/s, 2 workers, faults at a low rate")
    block = markdown(rows, summary, sys.argv[1:], args.rate, args.faults)
    print(block)
    if args.write_docs:
        write_docs(block)
    problems = [
        k
        for k in ("duplicates_at_target", "lost", "at_target_not_committed", "backlog_after_drain")
        if summary[k]
    ]
    if problems:
        raise SystemExit(f"soak finished with problems: {problems}")


if __name__ == "__main__":
    main()
