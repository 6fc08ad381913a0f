"""An approval that lapses while a write's outcome is open must not undo check-by-read.

The worker settles a write's outcome by reading the target before it looks at the approval: a write that
landed is committed whatever happened to its approval since. (Approvals lapse after
WRITEBACK_APPROVAL_TTL_HOURS; the tests expire them by hand.)
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.drills.checks import check_drill
from tests.drills.conftest import Drill, wait_for
from writeback.models import Approval, Write
from writeback.services.requests import build_request
from writeback.services.targets import adapter_for
from writeback.states import WriteState
from writeback.sync.claim import claim_due

pytestmark = [
    pytest.mark.drill,
    pytest.mark.xdist_group("drills"),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def _allergies(drill: Drill, count: int) -> list[Write]:
    drill.post([b for b in drill.mixed_events(200) if b["type"] == "allergy.recorded"][:count])
    drill.approve_all()
    # The event Provenances wait for the allergies and are settled with them; the tests follow the allergies.
    return list(Write.objects.filter(tenant=drill.tenant).exclude(resource_type="Provenance"))


def _lapse_approvals() -> None:
    Approval.objects.update(expires_at=timezone.now() - timedelta(seconds=1))


@pytest.mark.parametrize("drill_sim", ["epic"], indirect=True)
def test_a_dead_workers_sent_write_whose_approval_lapsed_is_not_sent_again(drill: Drill) -> None:
    writes = _allergies(drill, 4)
    adapter = adapter_for(drill.tenant)
    for claimed in claim_due("worker:dead", 100):  # sent, then the worker died
        write = Write.objects.select_related("event", "tenant").get(pk=claimed.pk)
        assert adapter.write(build_request(write)).outcome == "committed"
    adapter.close()
    Write.objects.filter(tenant=drill.tenant).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    _lapse_approvals()
    # They landed before the approvals lapsed: found by read, committed, never asked for again.
    drill.settle(drill.start(processes=1), timeout=30)
    assert Write.objects.filter(tenant=drill.tenant, state=WriteState.COMMITTED).count() == len(writes)
    check_drill(drill, "lapsed-approval-epic")


def test_an_unknown_outcome_whose_approval_lapsed_is_settled_by_read(drill: Drill) -> None:
    writes = _allergies(drill, 3)
    drill.set_faults("timeout_after_commit=1,stall_seconds=1.5,seed=1")  # they land; the answers time out
    batch = drill.start(processes=1)
    unknown = Write.objects.filter(tenant=drill.tenant, state=WriteState.OUTCOME_UNKNOWN)
    wait_for(lambda: unknown.count() == len(writes), timeout=30, what="outcome_unknown")
    drill.workers.stop(batch)
    drill.set_faults(None)
    _lapse_approvals()
    Write.objects.filter(tenant=drill.tenant).update(next_attempt_at=timezone.now())
    drill.settle(drill.start(processes=1), timeout=10)  # found by read: committed
    check_drill(drill, "unknown-outcome-lapsed-approval")
