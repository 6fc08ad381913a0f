"""Permission failures, per profile and event type: a SMART client whose key the EHR does not know
(Veradigm: Unity credentials the EHR refuses) is refused terminally, with the reason, and nothing is
written; the same writes with the registered key go through."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters import auth
from adapters.base import Outcome
from adapters.registry import get_adapter
from adapters.simulator import start_simulator
from tests.contract.cases import EVENT_TYPES, PROFILES, ours, prepare, requests_for, supported
from tests.contract.conftest import PatientPool, target_for

CLIENT_ID = "writeback-contract"
pytestmark = pytest.mark.parametrize("event_type", EVENT_TYPES)


def _keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys():
    return {"registered": _keypair(), "unknown": _keypair()}


@pytest.fixture(scope="module", params=PROFILES)
def sim(request, keys):
    # Unity has its own credentials rather than SMART tokens, so Veradigm's simulator runs without SMART.
    smart = request.param != "veradigm"
    handle = start_simulator(
        request.param,
        seed="demo",
        auth="smart" if smart else "none",
        public_keys=[keys["registered"][1]],
        client_id=CLIENT_ID,
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


def _adapter(sim, key_pem, monkeypatch, unity_password="secret"):
    monkeypatch.setenv("WB_CONTRACT_KEY", key_pem)
    monkeypatch.setenv("WB_CONTRACT_UNITY", unity_password)
    if sim.profile == "veradigm":
        settings = {
            "unity_username": "writeback",
            "unity_password_ref": "env:WB_CONTRACT_UNITY",
            "unity_appname": "fhir-writeback",
            "unity_ehr_user": "writeback",
            "unity_ehr_password_ref": "env:WB_CONTRACT_UNITY",
        }
        return get_adapter(target_for(sim, settings=settings))
    return get_adapter(
        target_for(
            sim,
            auth_mode="smart",
            client_id=CLIENT_ID,
            token_url=sim.token_url,
            private_key_ref="env:WB_CONTRACT_KEY",
        )
    )


def test_an_unknown_key_is_refused_and_nothing_is_written(sim, keys, pool, monkeypatch, event_type):
    adapter = _adapter(sim, keys["unknown"][0], monkeypatch, unity_password="not-the-password")
    try:
        for req in requests_for(event_type, pool.take()):
            if not supported(sim.profile, event_type):
                assert adapter.refusal(req.resource_type, req.operation)
                assert adapter.write(req).outcome is Outcome.TERMINAL
                continue
            prepare(sim, req)
            result = adapter.write(req)
            assert result.outcome is Outcome.TERMINAL, result.message
            reason = "Invalid username or password" if sim.profile == "veradigm" else "invalid_client"
            assert reason in result.message
            if req.operation == "create":
                assert ours(sim, sim.profile, event_type, req) == []
    finally:
        adapter.close()


def test_the_registered_key_writes(sim, keys, pool, monkeypatch, event_type):
    adapter = _adapter(sim, keys["registered"][0], monkeypatch)
    try:
        req = requests_for(event_type, pool.take())[-1]
        if not supported(sim.profile, event_type):
            reason = adapter.refusal(req.resource_type, req.operation)
            result = adapter.write(req)
            assert reason and result.outcome is Outcome.TERMINAL and reason in result.message
            return
        prepare(sim, req)
        result = adapter.write(req)
        assert result.outcome is Outcome.COMMITTED, result.message
    finally:
        adapter.close()
