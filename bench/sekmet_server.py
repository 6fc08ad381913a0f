"""An independent FHIR R4 server to write into: SEKMET (`sekmet-fhir` from PyPI, FastAPI + SQLite).

It is not our code and not our simulator, so a drain into it measures our write path against a server
whose cost we do not control, as an outside tester would. Its pins (FastAPI, pydantic, fhir.resources)
differ from ours, so it gets a virtualenv of its own under `.bench/sekmet-venv` (made on first use;
`BENCH_SEKMET_VENV` may name another one that already holds sekmet-fhir 0.1.1).

Each `Sekmet` is one fresh server process: `uvicorn sekmet.main:app_factory --factory` on a free port,
configured with an in-memory store and strict inbound validation, so every run starts empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import TOOLS, ensure_venv, free_port, stop

REQUIREMENT = "sekmet-fhir==0.1.1"
CONFIG = """db_path: ":memory:"
base_url: "http://127.0.0.1:{port}/fhir"
validation: {{inbound: strict}}
"""


def python() -> Path:
    override = os.environ.get("BENCH_SEKMET_VENV")
    folder = Path(override) if override else TOOLS / "sekmet-venv"
    return ensure_venv(folder, REQUIREMENT, "sekmet-fhir", "0.1.1")


@dataclass
class Stored:
    """What the server holds: our Observations by identifier value, and every Observation."""

    by_identifier: Counter = field(default_factory=Counter)  # write uid -> Observations carrying it
    ids_by_identifier: dict[str, str] = field(default_factory=dict)  # write uid -> a resource id
    total: int = 0

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.by_identifier.values() if n > 1)


class Sekmet:
    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="wbdrill-bench-sekmet-"))
        (self.folder / "settings.yaml").write_text(CONFIG.format(port=self.port))
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        env = {**os.environ, "SEKMET_CONFIG": str(self.folder / "settings.yaml")}
        args = [
            str(python().parent / "uvicorn"), "sekmet.main:app_factory", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        with open(self.folder / "server.log", "wb") as log:
            # Its working folder is the temporary one: the app may write files beside its settings.
            self.proc = subprocess.Popen(args, cwd=self.folder, env=env, stdout=log, stderr=log)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sekmet exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"sekmet did not answer /metadata within {timeout:.0f} s")

    def log_tail(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def observations(self, system: str) -> Stored:
        """Pages through every Observation and counts those carrying an identifier of `system`."""
        stored = Stored()
        with httpx.Client(base_url=self.base, timeout=120) as http:
            offset = 0
            while True:
                page = http.get("/Observation", params={"_count": "1000", "_offset": str(offset)})
                page.raise_for_status()
                entries = page.json().get("entry") or []
                for entry in entries:
                    resource = entry["resource"]
                    stored.total += 1
                    for ident in resource.get("identifier") or []:
                        if ident.get("system") == system:
                            stored.by_identifier[ident["value"]] += 1
                            stored.ids_by_identifier[ident["value"]] = resource["id"]
                if len(entries) < 1000:
                    break
                offset += 1000
            # The same question the way an integration engineer would ask it: search by identifier system.
            found = http.get("/Observation", params={"identifier": f"{system}|", "_summary": "count"}).json()
        if found.get("total") != sum(stored.by_identifier.values()):
            raise RuntimeError(
                f"search by identifier system found {found.get('total')} Observations, "
                f"paging found {sum(stored.by_identifier.values())}"
            )
        return stored

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Sekmet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
