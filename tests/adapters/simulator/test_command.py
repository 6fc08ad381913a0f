"""`manage.py run_ehr_simulator`: prints its URLs when ready, serves, exits cleanly on SIGTERM."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

MANAGE = Path(__file__).resolve().parents[3] / "manage.py"


def test_runs_until_sigterm_and_exits_cleanly():
    process = subprocess.Popen(
        [
            sys.executable,
            str(MANAGE),
            "run_ehr_simulator",
            "--port",
            "0",
            "--profile",
            "epic",
            "--seed",
            "none",
            "--faults",
            "slow_ms=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "ready" in line, process.stderr.read()
        origin = re.search(r"origin (\S+)", line).group(1)
        assert f"fhir {origin}/api/FHIR/R4" in line and f"token {origin}/oauth2/token" in line
        health = httpx.get(f"{origin}/_sim/health", timeout=5).json()
        assert health == {"profile": "epic", "resources": 0}
        assert httpx.get(f"{origin}/_sim/faults", timeout=5).json()["spec"] == "slow_ms=1"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_bad_options_fail_with_a_message():
    result = subprocess.run(
        [sys.executable, str(MANAGE), "run_ehr_simulator", "--port", "0", "--faults", "error_5xx=7"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "error_5xx" in result.stderr
