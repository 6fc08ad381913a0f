"""Permission failures on a write, where SMART applies (generic, Epic, athena; Veradigm writes through
Unity's own credentials, see test_permissions): a token whose scopes do not cover the write gets a 403
`insufficient_scope` from the EHR, classified terminal with the reason kept, and nothing is written.
Also Epic's answer for a write API not granted to the client at all: a 403 with an empty body."""

from __future__ import annotations

import pytest

from adapters import auth
from adapters.base import Outcome
from adapters.registry import get_adapter
from adapters.simulator import start_simulator
from tests.contract.cases import EVENT_TYPES, current, ours, prepare, requests_for, supported
from tests.contract.conftest import PatientPool, target_for
from tests.contract.test_permissions import CLIENT_ID, _keypair

SMART_PROFILES = ("generic", "epic", "athena")
# A client registered for reading only: no FHIR write scope, no athena v1 scope.
READ_ONLY = ["system/*.rs", "system/*.read"]


@pytest.fixture(scope="module")
def key():
    return _keypair()


@pytest.fixture(scope="module", params=SMART_PROFILES)
def sim(request, key):
    handle = start_simulator(
        request.param,
        seed="demo",
        auth="smart",
        public_keys=[key[1]],
        client_id=CLIENT_ID,
        granted_scopes=READ_ONLY,
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def pool(sim):
    return PatientPool(sim)


@pytest.fixture(autouse=True)
def _no_shared_tokens():
    auth.clear_token_cache()
    yield
    auth.clear_token_cache()


def _adapter(sim, key, monkeypatch, **overrides):
    monkeypatch.setenv("WB_SCOPES_KEY", key[0])
    target = target_for(
        sim,
        auth_mode="smart",
        client_id=CLIENT_ID,
        token_url=sim.token_url,
        private_key_ref="env:WB_SCOPES_KEY",
        **overrides,
    )
    return get_adapter(target)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_a_write_outside_the_tokens_scopes_is_403_insufficient_scope(sim, key, pool, monkeypatch, event_type):
    if not supported(sim.profile, event_type):
        return  # refused before any token is asked for (test_matrix)
    adapter = _adapter(sim, key, monkeypatch)
    try:
        req = requests_for(event_type, pool.take())[-1]
        prepare(sim, req)
        before = current(sim, req.resource_type, req.target_id) if req.target_id else None
        result = adapter.write(req)
        assert result.outcome is Outcome.TERMINAL, result.message
        assert "HTTP 403" in result.message and "insufficient_scope" in result.message
        refused = result.exchanges[-1]
        assert refused.status == 403 and refused.method in ("POST", "PUT", "PATCH", "GET")
        seen = [r for r in sim.requests(20) if r["status"] == 403]
        assert seen and "authorization" not in seen[-1]["headers"]
        if req.operation == "create":
            assert ours(sim, sim.profile, event_type, req) == []
        else:
            assert current(sim, req.resource_type, req.target_id) == before
    finally:
        adapter.close()


@pytest.mark.parametrize("event_type", ["vitals.recorded"])
def test_least_privilege_scopes_follow_the_tenants_enabled_writes(sim, key, pool, monkeypatch, event_type):
    """The same refusal with a registration that grants everything, when the tenant did not enable the
    write: the adapter asks only for what is enabled, so the token cannot create (Epic ignores the asked
    scope and grants its registration: there the registration is what narrows)."""
    if sim.profile == "epic":
        return
    everything = start_simulator(
        sim.profile, seed="demo", auth="smart", public_keys=[key[1]], client_id=CLIENT_ID
    )
    try:
        reads_only = frozenset({("Observation", "read"), ("Patient", "read")})
        adapter = _adapter(everything, key, monkeypatch, enabled=reads_only)
        req = requests_for(event_type, 1002)[1]
        result = adapter.write(req)
        assert result.outcome is Outcome.TERMINAL and "insufficient_scope" in result.message
        assert result.exchanges[-1].status == 403
        assert ours(everything, everything.profile, event_type, req) == []
        adapter.close()
        full = _adapter(everything, key, monkeypatch)
        assert full.write(requests_for(event_type, 1003)[1]).outcome is Outcome.COMMITTED
        full.close()
    finally:
        everything.stop()


@pytest.mark.parametrize("event_type", ["medication.reconciled"])
def test_epics_answer_for_an_api_not_granted_is_403_with_no_body(key, monkeypatch, event_type):
    """Our Epic adapter refuses a MedicationStatement write before sending; sent anyway (as a refusal
    table defect would), Epic's 403 with an empty body is terminal and nothing is stored."""
    epic = start_simulator("epic", seed="demo", auth="smart", public_keys=[key[1]], client_id=CLIENT_ID)
    try:
        adapter = _adapter(epic, key, monkeypatch)
        req = requests_for(event_type, 1002)[-1]
        assert adapter.refusal(req.resource_type, req.operation)
        monkeypatch.setattr(adapter, "preflight", lambda _req: None)
        result = adapter.write(req)
        assert result.outcome is Outcome.TERMINAL and result.message == "HTTP 403: no body"
        assert result.exchanges[-1].status == 403 and result.exchanges[-1].response_body == ""
        assert epic.requests(5)[-1]["status"] == 403
        assert ours(epic, "epic", event_type, req) == []
        adapter.close()
    finally:
        epic.stop()
