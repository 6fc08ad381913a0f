"""The peer: the PyPI package `ehr-writeback` (0.1.0a1) writing the same Observations into a fresh server.

It is installed into a virtualenv of its own, `.bench/peer-venv` (its code is never copied here), and
driven by bench/peer_drive.py the way its README and orchestrator show. What it is, read from the
installed package: `WritebackOrchestrator.process_batch` runs `max_concurrency` (5) asyncio tasks; each
Observation is one `POST [base]/Observation` on a new `httpx.AsyncClient` (no keep-alive), with no
identifier on the resource and no conditional create; a failed POST (5xx, a lost connection) is retried
up to 3 times after 1, 2 and 4 s; its idempotency key is sha256(patient, code, effective time), held in
a store the caller provides (Delta tables in the package; memory here). It has no worker processes of
its own: two processes each take half of the Observations.

Its Observation model has one value and a code: each of ours maps to the same patient, encounter, code
and first value, with an effective time made unique per Observation (ours all share one, and the peer
would skip those as duplicates of each other).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta

import httpx
from common import TOOLS, cpu_seconds, ensure_venv
from fhir_drain import Run, _together, fault_proxy, proxy_stats
from sekmet_server import Sekmet

REQUIREMENT = "ehr-writeback==0.1.0a1"


def python() -> str:
    return str(ensure_venv(TOOLS / "peer-venv", REQUIREMENT, "ehr-writeback", "0.1.0a1"))


def observations(resources: list[dict]) -> list[dict]:
    """Our resources as the peer's `Observation` model (see the module's docstring)."""
    rows = []
    for i, r in enumerate(resources):
        coding = r["code"]["coding"][0]
        quantity = r.get("valueQuantity") or (r.get("component") or [{}])[0].get("valueQuantity") or {}
        effective = datetime.fromisoformat(r["effectiveDateTime"]) + timedelta(seconds=i)
        rows.append(
            {
                "patient_id": r["subject"]["reference"].split("/", 1)[1],
                "encounter_id": (r.get("encounter") or {}).get("reference", "/").split("/", 1)[1] or None,
                "code": coding["code"],
                "code_system": coding["system"],
                "display_name": coding.get("display") or r["code"].get("text", ""),
                "value": quantity.get("value", 0),
                "unit": quantity.get("unit"),
                "effective_datetime": effective.isoformat(),
                "source_system": "bench",
            }
        )
    return rows


def held(server: Sekmet) -> tuple[int, int]:
    """(Observations stored, distinct Observations among them by patient and effective time)."""
    keys: Counter = Counter()
    with httpx.Client(base_url=server.base, timeout=120) as http:
        offset = 0
        while True:
            page = http.get("/Observation", params={"_count": "1000", "_offset": str(offset)}).json()
            entries = page.get("entry") or []
            for entry in entries:
                r = entry["resource"]
                keys[(r["subject"]["reference"], r.get("effectiveDateTime"))] += 1
            if len(entries) < 1000:
                break
            offset += 1000
    return sum(keys.values()), len(keys)


def drive(resources: list[dict], processes: int, faults: tuple[float, float, float] | None = None) -> Run:
    """The peer writing the Observations into a fresh server (through the fault proxy with `faults`).
    Without faults the run must store each exactly once; with faults, what it did is the result."""
    rows = observations(resources)
    peer_python = python()
    with Sekmet() as server, tempfile.NamedTemporaryFile("w", suffix=".json", prefix="wbdrill-bench-") as f:
        json.dump(rows, f)
        f.flush()
        direct = contextlib.nullcontext(server.base.removesuffix("/fhir"))
        with fault_proxy(server.port, *faults) if faults else direct as origin:
            base = f"{origin}/fhir"
            start_at = time.time() + 2.5  # after every process has imported pydantic and httpx
            commands = [
                [peer_python, "bench/peer_drive.py", f.name, base, "--part", str(i), "--parts",
                 str(processes), "--start-at", str(start_at)]
                for i in range(processes)
            ]  # fmt: skip
            server_before = cpu_seconds(server.proc.pid)
            outputs = _together(commands)
            server_cpu = cpu_seconds(server.proc.pid) - server_before
            stats = proxy_stats(origin) if faults else {}
        stored, distinct = held(server)
    n = len(rows)
    totals = {k: sum(o[k] for o in outputs) for k in ("succeeded", "skipped", "failed", "dead_lettered")}
    notes = {**totals, "stored": stored, "duplicates": stored - distinct, "lost": n - distinct}
    if stats:
        notes["proxy"] = stats
    if not faults and (totals["succeeded"] != n or stored != n):
        raise RuntimeError(f"peer: {notes}")
    span = max(o["last"] for o in outputs) - min(o["first"] for o in outputs)
    cpu = sum(o["cpu_s"] for o in outputs)
    return Run(totals["succeeded"] / span, 1000 * cpu / n, 1000 * server_cpu / n, notes)
