"""Every outgoing request carries a new X-Request-ID, and the write's correlation id wherever there is one:
token fetches, writes, read-back and conflict reads (`read(..., correlation_id=)`), as the simulator saw
them over real sockets."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters import auth
from adapters.base import Outcome
from adapters.registry import get_adapter
from adapters.simulator import start_simulator
from tests.adapters.intended import write_request
from tests.adapters.support import target

CLIENT_ID = "writeback-ids"


@pytest.fixture
def smart_sim(monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    monkeypatch.setenv("WB_IDS_KEY", pem)
    auth.clear_token_cache()
    sim = start_simulator("generic", auth="smart", public_keys=[public], client_id=CLIENT_ID)
    yield sim
    sim.stop()
    auth.clear_token_cache()


def _adapter(sim):
    return get_adapter(
        target(
            "generic",
            base_url=sim.fhir_base,
            auth_mode="smart",
            client_id=CLIENT_ID,
            token_url=sim.token_url,
            private_key_ref="env:WB_IDS_KEY",
            enabled=frozenset({("Observation", "create"), ("Patient", "read")}),
        )
    )


def test_token_fetch_write_and_read_back_carry_request_and_correlation_ids(smart_sim):
    adapter = _adapter(smart_sim)
    req = write_request("vitals.recorded", 1, patient="pat-1002", encounter="enc-1002")
    written = adapter.write(req)
    assert written.outcome is Outcome.COMMITTED, written.message
    back = adapter.read("Observation", written.resource_id, correlation_id=req.correlation_id)
    past = adapter.read(
        "Observation", f"{written.resource_id}/_history/{written.version}", correlation_id=req.correlation_id
    )
    assert back.resource["id"] == past.resource["id"] == written.resource_id
    adapter.close()
    seen = [(r["method"], r["path"].split("?")[0], r["headers"]) for r in smart_sim.requests(20)]
    assert [(m, p.rsplit("/", 2)[-2:]) for m, p, _ in seen] == [
        ("POST", ["oauth2", "token"]),
        ("POST", ["fhir", "Observation"]),
        ("GET", ["Observation", written.resource_id]),
        ("GET", ["_history", written.version]),
    ]
    for _, _, headers in seen:
        assert headers["x-correlation-id"] == req.correlation_id
    request_ids = [headers["x-request-id"] for _, _, headers in seen]
    assert len(set(request_ids)) == 4 and all(len(r) == 36 for r in request_ids)
    # The exchanges name the request ids the server saw (the token call is not a FHIR exchange).
    assert [e.request_id for e in written.exchanges] == [request_ids[1]]
    assert [e.request_id for e in back.exchanges + past.exchanges] == request_ids[2:]


def test_a_read_without_a_correlation_id_still_has_a_request_id(smart_sim):
    adapter = _adapter(smart_sim)
    assert adapter.read("Patient", "pat-1002").resource["id"] == "pat-1002"
    adapter.close()
    token_call, read_call = smart_sim.requests(2)
    for call in (token_call, read_call):
        assert call["headers"]["x-request-id"] and "x-correlation-id" not in call["headers"]
