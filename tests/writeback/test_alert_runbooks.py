"""Every alert kind the code raises has a runbook entry in docs/operations.md."""

import re
from pathlib import Path

from writeback.services.alerts import OUTBOUND_REFUSED
from writeback.services.reconcile import FINDINGS_ALERT
from writeback.services.restore import RESTORE_ALERT
from writeback.services.thresholds import CODES

ROOT = Path(__file__).resolve().parents[2]


def runbook_kinds() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    runbooks = text.split("## Runbooks", 1)[1]
    kinds: set[str] = set()
    for heading in re.findall(r"^### (.+)$", runbooks, flags=re.M):
        kinds.update(k.strip() for k in heading.split(","))
    return kinds


def raised_by_the_worker() -> set[str]:
    """Codes the worker passes to its terminal outcome or schedules as an alert, and the codes the
    reconciliation sweep and the restore check raise."""
    kinds: set[str] = set()
    for name in (
        "sync/process.py",
        "services/decide.py",
        "services/record.py",
        "services/reconcile.py",
        "services/restore.py",
    ):
        source = (ROOT / "writeback" / name).read_text()
        kinds.update(re.findall(r'code="([a-z][a-z-]+)"', source))
        kinds.update(re.findall(r'alert = \(\s*"([a-z][a-z-]+)"', source))
        kinds.update(re.findall(r'return "([a-z][a-z-]+)", f"', source))
    return kinds


def test_every_alert_kind_has_a_runbook():
    consent_rules = set(
        re.findall(r'"(consent-[a-z-]+)"', (ROOT / "writeback/services/consents.py").read_text())
    )
    kinds = (
        raised_by_the_worker()
        | set(CODES)
        | {OUTBOUND_REFUSED, FINDINGS_ALERT, RESTORE_ALERT}
        | consent_rules
    )
    assert {"retries-exhausted", "rejected-by-target", "outcome-unknown", "patient-binding"} <= kinds
    missing = kinds - runbook_kinds()
    assert not missing, f"no runbook in docs/operations.md for {sorted(missing)}"
