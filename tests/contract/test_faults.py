"""Failures on the wire, per profile, against the simulator's fault injection: every one is classified,
and an answer that never came is settled by check-by-read, never by a blind resend."""

from __future__ import annotations

import pytest

from adapters.base import Outcome
from adapters.registry import get_adapter
from tests.contract.cases import deliver, ours, prepare, requests_for, trusts_conditional_create
from tests.contract.conftest import target_for

HEART_RATE = 1  # the second vitals write: a single reading every profile takes


@pytest.fixture
def quick(sim, pool):
    """An adapter with a short read timeout, its session (Unity) already open."""
    adapter = get_adapter(target_for(sim, read_timeout=0.5))
    warm = requests_for("vitals.recorded", pool.take())[HEART_RATE]
    assert adapter.write(warm).outcome is Outcome.COMMITTED
    yield adapter
    sim.clear_faults()
    adapter.close()


def _vital(n):
    return requests_for("vitals.recorded", n)[HEART_RATE]


def test_a_timeout_after_commit_is_ambiguous_and_settled_by_reading(sim, quick, n):
    req = _vital(n)
    sim.set_faults("timeout_after_commit=1,stall_seconds=1.5")
    result = quick.write(req)
    sim.clear_faults()
    assert result.outcome is Outcome.AMBIGUOUS and "may have landed" in result.message
    found = quick.find_by_identifier(req)
    assert found.found is True
    (stored,) = ours(sim, sim.profile, "vitals.recorded", req)
    assert found.resource_id == stored["id"]
    assert deliver(quick, req)[0] == ("sent" if trusts_conditional_create(quick, req) else "found")
    assert len(ours(sim, sim.profile, "vitals.recorded", req)) == 1


def test_a_dropped_connection_is_ambiguous_and_resent_only_when_absent(sim, quick, n):
    req = _vital(n)
    sim.set_faults("drop_connection=1")
    result = quick.write(req)
    sim.clear_faults()
    assert result.outcome is Outcome.AMBIGUOUS
    assert quick.find_by_identifier(req).found is False  # dropped before storing
    assert deliver(quick, req)[0] == "sent"
    assert len(ours(sim, sim.profile, "vitals.recorded", req)) == 1


def test_server_errors(sim, quick, n):
    req = _vital(n)
    sim.set_faults("error_5xx=1,seed=3")
    result = quick.write(req)
    sim.clear_faults()
    # Resending is safe under confirmed conditional create; otherwise a 5xx to a POST may hide a commit.
    expected = Outcome.RETRYABLE if trusts_conditional_create(quick, req) else Outcome.AMBIGUOUS
    assert result.outcome is expected and "HTTP 50" in result.message
    deliver(quick, req)
    assert len(ours(sim, sim.profile, "vitals.recorded", req)) == 1


def test_throttling_is_retryable_with_its_delay(sim, quick, n):
    sim.set_faults("rate_limit=1")
    result = quick.write(_vital(n))
    assert result.outcome is Outcome.RETRYABLE and result.retry_after == 1
    if sim.profile == "athena":
        assert "HTTP 403" in result.message  # athena throttles with a 403 and quota headers


def test_maintenance_is_retryable_until_the_window_ends(sim, quick, n):
    sim.set_faults("maintenance=0..30")
    result = quick.write(_vital(n))
    assert result.outcome is Outcome.RETRYABLE and 0 < result.retry_after <= 30
    assert ours(sim, sim.profile, "vitals.recorded", _vital(n)) == []


def test_slow_answers_within_the_timeout_commit(sim, quick, n):
    sim.set_faults("slow_ms=150")
    result = quick.write(_vital(n))
    assert result.outcome is Outcome.COMMITTED
    assert result.exchanges[-1].latency_ms >= 150


def test_a_concurrent_edit_just_before_an_if_match_write_is_a_conflict(sim, quick, n):
    if not quick.capabilities().if_match:
        return  # no If-Match at this vendor: updates there are read-compare-write (tested in the matrix)
    req = requests_for("demographics.updated", n)[0]
    prepare(sim, req)
    sim.set_faults("stale_version=1")
    result = quick.write(req)
    assert result.outcome is Outcome.CONFLICT and result.current_version == str(int(req.base_version) + 1)
