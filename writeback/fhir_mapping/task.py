"""referral.status_changed -> the referral Task with its new status."""

from typing import Any

from writeback.canonical import CanonicalEvent


def task_update(event: CanonicalEvent) -> dict[str, Any]:
    data = event.data
    return {"resourceType": "Task", "id": data.task_id, "status": data.to_status, "intent": "order"}
