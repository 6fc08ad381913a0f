"""The worker's one call for alerts, in a module of its own: it drives thresholds (which raise and
resolve alerts), escalation and delivery, so it can import all three without any of them importing
it back."""

import logging
from datetime import datetime

from writeback.services.alert_delivery import deliver_due
from writeback.services.alerts import alerts_escalate_due
from writeback.services.thresholds import thresholds_evaluate_throttled

log = logging.getLogger(__name__)


def alerts_housekeeping(now: datetime | None = None) -> None:
    """The worker's one call for alerts: evaluate the thresholds (throttled), escalate unacknowledged
    pages, send due deliveries. Each step fails on its own: a broken receiver never stops escalation."""
    for step in (thresholds_evaluate_throttled, alerts_escalate_due, deliver_due):
        try:
            step(now)
        except Exception:
            log.exception("alert housekeeping step %s failed", step.__name__)
