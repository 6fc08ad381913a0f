"""SMART backend services: the client assertion, scopes, the shared token cache, and the whole exchange
against the simulator's token endpoint (good key, wrong key, expired token refreshed once)."""

import threading
import time

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters import auth
from adapters.base import Outcome
from adapters.generic.adapter import GenericFhirAdapter
from adapters.http import AuthUnavailable
from adapters.secret_refs import SecretRefError, resolve_secret_ref
from adapters.simulator import start_simulator
from tests.adapters.support import target

CLIENT_ID = "writeback-client"


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
    return {"good": _keypair(), "wrong": _keypair()}


@pytest.fixture(autouse=True)
def _fresh_cache():
    auth.clear_token_cache()
    yield
    auth.clear_token_cache()


# --- pieces ------------------------------------------------------------------------------------------


def test_client_assertion_claims(keys):
    private, public = keys["good"]
    key = serialization.load_pem_private_key(private.encode(), password=None)
    token_url = "https://ehr.example.org/oauth2/token"
    first = auth.client_assertion(client_id=CLIENT_ID, token_url=token_url, private_key=key, key_id="k1")
    second = auth.client_assertion(client_id=CLIENT_ID, token_url=token_url, private_key=key)
    claims = jwt.decode(first, public, algorithms=["RS384"], audience=token_url)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert 0 < claims["exp"] - time.time() <= 300
    assert jwt.get_unverified_header(first) == {"alg": "RS384", "typ": "JWT", "kid": "k1"}
    assert "kid" not in jwt.get_unverified_header(second)
    assert claims["jti"] != jwt.decode(second, public, algorithms=["RS384"], audience=token_url)["jti"]


def test_scopes_are_least_privilege():
    enabled = {("Observation", "create"), ("Patient", "patch"), ("Encounter", "read")}
    needs = auth.access_needs(enabled)
    assert auth.scopes_for(needs, "v2") == (
        "system/Encounter.rs system/Observation.c system/Observation.rs system/Patient.rs system/Patient.u"
    )
    assert auth.scopes_for(needs, "v1") == (
        "system/Encounter.read system/Observation.read system/Observation.write "
        "system/Patient.read system/Patient.write"
    )
    # Types written through a proprietary API need only FHIR read access.
    assert auth.access_needs({("Observation", "create")}, fhir_types=set()) == {("Observation", "rs")}


def test_generic_asks_update_rights_for_compensating_its_creates():
    adapter = GenericFhirAdapter(target("generic", enabled=frozenset({("Observation", "create")})))
    assert adapter.scope_needs() == {("Observation", "c"), ("Observation", "u"), ("Observation", "rs")}


def test_secret_refs(tmp_path, monkeypatch):
    monkeypatch.setenv("WB_TEST_SECRET", "s3")
    assert resolve_secret_ref("env:WB_TEST_SECRET") == "s3"
    path = tmp_path / "secret.txt"
    path.write_text("from-file\n")
    assert resolve_secret_ref(str(path)) == "from-file"
    with pytest.raises(SecretRefError, match="not a literal value"):
        resolve_secret_ref("hunter2")
    with pytest.raises(SecretRefError, match="not set") as err:
        resolve_secret_ref("env:WB_TEST_MISSING")
    assert "s3" not in str(err.value)


@respx.mock
def test_tokens_are_cached_shared_and_fetched_once_under_contention(keys, tmp_path):
    key_file = tmp_path / "key.pem"
    key_file.write_text(keys["good"][0])
    token_url = "https://ehr.example.org/token"
    route = respx.post(token_url).mock(
        side_effect=lambda request: (
            time.sleep(0.05),
            httpx.Response(200, json={"access_token": "T", "expires_in": 3600}),
        )[1]
    )
    sources = [
        auth.SmartBackendAuth(
            token_url=token_url, client_id=CLIENT_ID, private_key_ref=str(key_file), scope="s"
        )
        for _ in range(8)
    ]
    got = []
    with httpx.Client() as http:
        threads = [threading.Thread(target=lambda s=s: got.append(s.token(http))) for s in sources]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == ["T"] * 8 and route.call_count == 1


@respx.mock
def test_token_endpoint_failures_are_classified(keys, tmp_path):
    key_file = tmp_path / "key.pem"
    key_file.write_text(keys["good"][0])
    token_url = "https://ehr.example.org/token"
    source = auth.SmartBackendAuth(token_url=token_url, client_id=CLIENT_ID, private_key_ref=str(key_file))
    with httpx.Client() as http:
        respx.post(token_url).mock(return_value=httpx.Response(503))
        with pytest.raises(AuthUnavailable) as err:
            source.token(http)
        assert err.value.outcome is Outcome.RETRYABLE
        respx.post(token_url).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(AuthUnavailable) as err:
            source.token(http)
        assert err.value.outcome is Outcome.RETRYABLE
    missing = auth.SmartBackendAuth(
        token_url=token_url, client_id=CLIENT_ID, private_key_ref="env:WB_NO_SUCH_KEY"
    )
    with httpx.Client() as http, pytest.raises(AuthUnavailable) as err:
        missing.token(http)
    assert err.value.outcome is Outcome.TERMINAL and "WB_NO_SUCH_KEY" in str(err.value)


# --- end to end against the simulator's token endpoint ------------------------------------------------


@pytest.fixture(scope="module")
def smart_sim(keys):
    handle = start_simulator("generic", auth="smart", public_keys=[keys["good"][1]], client_id=CLIENT_ID)
    yield handle
    handle.stop()


def _adapter(handle, key_pem: str, tmp_path, monkeypatch) -> GenericFhirAdapter:
    monkeypatch.setenv("WB_TEST_PRIVATE_KEY", key_pem)
    cfg = target(
        "generic",
        base_url=handle.fhir_base,
        auth_mode="smart",
        client_id=CLIENT_ID,
        token_url=handle.token_url,
        private_key_ref="env:WB_TEST_PRIVATE_KEY",
        key_id="test-key",
        enabled=frozenset({("Patient", "read")}),
    )
    return GenericFhirAdapter(cfg)


def _token_requests(handle) -> int:
    return sum(1 for r in handle.requests(500) if r["path"].startswith("/oauth2/token"))


def test_good_key_reads_and_reuses_its_token(smart_sim, keys, tmp_path, monkeypatch):
    before = _token_requests(smart_sim)
    adapter = _adapter(smart_sim, keys["good"][0], tmp_path, monkeypatch)
    try:
        assert adapter.read("Patient", "pat-1001").resource["id"] == "pat-1001"
        assert adapter.read("Patient", "pat-1002").resource["id"] == "pat-1002"
    finally:
        adapter.close()
    assert _token_requests(smart_sim) - before == 1


def test_wrong_key_is_terminal_and_reaches_no_fhir_endpoint(smart_sim, keys, tmp_path, monkeypatch):
    adapter = _adapter(smart_sim, keys["wrong"][0], tmp_path, monkeypatch)
    try:
        result = adapter.read("Patient", "pat-1001")
    finally:
        adapter.close()
    assert result.resource is None and result.outcome is Outcome.TERMINAL
    assert "invalid_client" in result.message
    last = smart_sim.requests(1)[0]
    assert last["path"].startswith("/oauth2/token") and last["status"] == 401


def test_an_expired_token_is_refreshed_once(smart_sim, keys, tmp_path, monkeypatch):
    adapter = _adapter(smart_sim, keys["good"][0], tmp_path, monkeypatch)
    try:
        assert adapter.read("Patient", "pat-1001").resource
        smart_sim.expire_tokens()
        before = _token_requests(smart_sim)
        result = adapter.read("Patient", "pat-1001")
        assert result.resource and [e.status for e in result.exchanges] == [401, 200]
        assert _token_requests(smart_sim) - before == 1
    finally:
        adapter.close()
