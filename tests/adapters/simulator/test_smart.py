"""SMART Backend Services: client assertions checked at the token endpoint, bearer tokens on every API."""

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.simulator import start_simulator

CLIENT_ID = "writeback-client"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def keys():
    return new_key(), new_key()


@pytest.fixture
def smart(keys):
    sim = start_simulator("generic", auth="smart", public_keys=[public_pem(keys[0])])
    yield sim
    sim.stop()


def assertion(key, aud, **claims):
    now = int(time.time())
    payload = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": aud,
        "jti": uuid.uuid4().hex,
        "exp": now + 240,
    } | claims
    return jwt.encode(payload, key, algorithm="RS384")


def token_request(client, url, signed, scope="system/Observation.c system/Patient.r"):
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        "scope": scope,
    }
    return client.post(url, data=form)


def test_a_good_assertion_gets_a_token_that_opens_the_api(smart, keys, client):
    r = token_request(client, smart.token_url, assertion(keys[0], smart.token_url))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/Observation.c system/Patient.r"
    patient = f"{smart.fhir_base}/Patient/pat-1001"
    refused = client.get(patient)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert client.get(patient, headers={"Authorization": f"Bearer {body['access_token']}"}).status_code == 200
    assert client.get(f"{smart.origin}/_sim/health").status_code == 200  # control endpoints stay open


@pytest.mark.parametrize(
    "case",
    ["wrong_key", "wrong_aud", "wrong_iss", "exp_too_far", "expired_assertion", "no_jti"],
)
def test_bad_assertions_are_invalid_client(smart, keys, client, case):
    good, other = keys
    signed = {
        "wrong_key": lambda: assertion(other, smart.token_url),
        "wrong_aud": lambda: assertion(good, "https://elsewhere.example/token"),
        "wrong_iss": lambda: assertion(good, smart.token_url, iss="someone-else"),
        "exp_too_far": lambda: assertion(good, smart.token_url, exp=int(time.time()) + 3600),
        "expired_assertion": lambda: assertion(good, smart.token_url, exp=int(time.time()) - 60),
        "no_jti": lambda: jwt.encode(
            {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": smart.token_url, "exp": int(time.time()) + 60},
            good,
            algorithm="RS384",
        ),
    }[case]()
    r = token_request(client, smart.token_url, signed)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    assert r.json()["error_description"]


def test_a_reused_jti_is_refused(smart, keys, client):
    signed = assertion(keys[0], smart.token_url)
    assert token_request(client, smart.token_url, signed).status_code == 200
    replay = token_request(client, smart.token_url, signed)
    assert replay.status_code == 401 and "jti" in replay.json()["error_description"]


def test_malformed_token_requests_are_400(smart, client):
    r = client.post(smart.token_url, data={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = client.post(smart.token_url, data={"grant_type": "client_credentials", "client_assertion_type": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_expired_tokens_are_401_until_a_new_token(smart, keys, client):
    token = token_request(client, smart.token_url, assertion(keys[0], smart.token_url)).json()["access_token"]
    patient = f"{smart.fhir_base}/Patient/pat-1001"
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(patient, headers=headers).status_code == 200
    smart.expire_tokens()
    expired = client.get(patient, headers=headers)
    assert expired.status_code == 401 and 'error="invalid_token"' in expired.headers["www-authenticate"]
    fresh = token_request(client, smart.token_url, assertion(keys[0], smart.token_url)).json()["access_token"]
    assert client.get(patient, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert client.post(f"{smart.origin}/_sim/tokens/expire").json() == {"expired": 1}
    assert client.get(patient, headers={"Authorization": f"Bearer {fresh}"}).status_code == 401


def test_the_token_endpoint_is_never_faulted(smart, keys, client):
    smart.set_faults("error_5xx=1.0,drop_connection=1.0")
    assert token_request(client, smart.token_url, assertion(keys[0], smart.token_url)).status_code == 200


def test_athena_token_path_and_v1_behind_bearer(keys, client):
    sim = start_simulator("athena", auth="smart", public_keys=[public_pem(keys[0])])
    try:
        assert sim.token_url.endswith("/oauth2/v1/token")
        ping = f"{sim.origin}/v1/195900/ping"
        refused = client.get(ping)
        assert refused.status_code == 401 and set(refused.json()) == {"error", "detailedmessage"}
        fhir_only = token_request(client, sim.token_url, assertion(keys[0], sim.token_url)).json()
        denied = client.get(ping, headers={"Authorization": f"Bearer {fhir_only['access_token']}"})
        assert denied.status_code == 403 and "insufficient_scope" in denied.json()["error"]
        assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
        v1 = "athena/service/Athenanet.MDP.* system/Patient.rs"
        token = token_request(client, sim.token_url, assertion(keys[0], sim.token_url), scope=v1).json()
        assert token["scope"] == v1
        assert client.get(ping, headers={"Authorization": f"Bearer {token['access_token']}"}).json() == {
            "pong": "true"
        }
    finally:
        sim.stop()
