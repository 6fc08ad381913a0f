"""No secret reaches a log record, at any level, from any logger (ours, httpx, httpcore, the simulator):
not the SMART private key, the client assertion, an access token, a Unity password or a Unity token;
during a token fetch, a 401 refresh and a Unity write. Nor the simulator's request log (`/_sim/requests`),
nor the exchanges stored as WriteAttempt rows."""

from __future__ import annotations

import dataclasses
import json
import logging

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters import auth
from adapters.base import Outcome
from adapters.registry import get_adapter
from adapters.simulator import start_simulator
from tests.adapters.intended import write_request
from tests.adapters.support import target

CLIENT_ID = "writeback-logs"
UNITY_PASSWORD = "unity-app-pass-7Qx2"
EHR_PASSWORD = "unity-ehr-pass-9Kd4"


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


def _logged(caplog) -> str:
    """Everything the records hold: formatted text, messages, arguments, exceptions and extras."""
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), record.exc_text or "", repr(vars(record))]
    return "\n".join(parts)


def _exchanges(result) -> str:
    return json.dumps([dataclasses.asdict(e) for e in result.exchanges])


def _assert_absent(secrets: dict[str, str], *haystacks: str) -> None:
    for name, value in secrets.items():
        assert value, name
        for haystack in haystacks:
            assert value not in haystack, f"the {name} leaked"


@pytest.fixture(autouse=True)
def _fresh_tokens():
    auth.clear_token_cache()
    yield
    auth.clear_token_cache()


def test_smart_fetch_and_401_refresh_log_no_secret(caplog, monkeypatch):
    private, public = _keypair()
    monkeypatch.setenv("WB_LOGS_KEY", private)
    assertions: list[str] = []
    real = auth.client_assertion

    def recording(**kwargs):
        assertions.append(real(**kwargs))
        return assertions[-1]

    monkeypatch.setattr(auth, "client_assertion", recording)
    issued: list[str] = []
    real_fetch = auth.SmartBackendAuth._fetch

    def fetching(self, http, correlation_id=""):
        token = real_fetch(self, http, correlation_id)
        issued.append(token.value)
        return token

    monkeypatch.setattr(auth.SmartBackendAuth, "_fetch", fetching)
    sim = start_simulator("generic", auth="smart", public_keys=[public], client_id=CLIENT_ID)
    caplog.set_level(logging.DEBUG)
    try:
        adapter = get_adapter(
            target(
                "generic",
                base_url=sim.fhir_base,
                auth_mode="smart",
                client_id=CLIENT_ID,
                token_url=sim.token_url,
                private_key_ref="env:WB_LOGS_KEY",
                enabled=frozenset({("Observation", "create")}),
            )
        )
        first = adapter.write(write_request("vitals.recorded", 1, patient="pat-1002", encounter="enc-1002"))
        assert first.outcome is Outcome.COMMITTED, first.message
        sim.expire_tokens()  # the next request gets a 401: the client fetches a new token once
        second = adapter.write(write_request("vitals.recorded", 2, patient="pat-1003", encounter="enc-1003"))
        assert second.outcome is Outcome.COMMITTED, second.message
        assert [e.status for e in second.exchanges] == [401, 201]
        adapter.close()
        assert len(assertions) == 2 and len(issued) == 2
        assert any(r.levelno == logging.DEBUG for r in caplog.records)  # the capture saw every level
        key_lines = [line for line in private.splitlines() if line and not line.startswith("-----")]
        secrets = {
            "private key": private,
            **{f"private key line {i}": line for i, line in enumerate(key_lines[1:4])},
            **{f"client assertion {i}": a for i, a in enumerate(assertions)},
            **{f"client assertion signature {i}": a.rsplit(".", 1)[1] for i, a in enumerate(assertions)},
            **{f"access token {i}": t for i, t in enumerate(issued)},
        }
        log = httpx.get(f"{sim.origin}/_sim/requests?limit=50").text
        _assert_absent(secrets, _logged(caplog), _exchanges(first), _exchanges(second), log)
    finally:
        sim.stop()


def test_a_unity_write_logs_no_password_or_token_and_the_simulator_redacts_them(caplog, monkeypatch):
    monkeypatch.setenv("WB_LOGS_UNITY", UNITY_PASSWORD)
    monkeypatch.setenv("WB_LOGS_EHR", EHR_PASSWORD)
    sim = start_simulator(
        "veradigm", seed="demo", unity_users={"svc-writeback": UNITY_PASSWORD, "ehr-writeback": EHR_PASSWORD}
    )
    caplog.set_level(logging.DEBUG)
    try:
        settings = {
            "unity_username": "svc-writeback",
            "unity_password_ref": "env:WB_LOGS_UNITY",
            "unity_appname": "fhir-writeback",
            "unity_ehr_user": "ehr-writeback",
            "unity_ehr_password_ref": "env:WB_LOGS_EHR",
        }
        adapter = get_adapter(target("veradigm", base_url=sim.fhir_base, settings=settings))
        result = adapter.write(write_request("problem.confirmed", patient="pat-1002", encounter="enc-1002"))
        assert result.outcome is Outcome.COMMITTED, result.message
        adapter.close()
        (unity_token,) = list(sim._sim.profile.unity._sessions)
        secrets = {"Unity password": UNITY_PASSWORD, "EHR password": EHR_PASSWORD, "Unity token": unity_token}
        entries = httpx.get(f"{sim.origin}/_sim/requests?limit=50").json()["requests"]
        log = json.dumps(entries)
        _assert_absent(secrets, _logged(caplog), _exchanges(result), log)
        # The inspection endpoint still shows the calls, with the secret fields marked.
        bodies = {
            e["path"].rsplit("/", 1)[-1]: json.loads(e["body"]) for e in entries if "Unity" in e["path"]
        }
        assert (
            bodies["GetToken"]["Password"] == "[redacted]"
            and bodies["GetToken"]["Username"] == "svc-writeback"
        )
        assert bodies["GetUserAuthentication"]["Parameter1"] == "[redacted]"
        assert bodies["GetUserAuthentication"]["Token"] == "[redacted]"
        assert (
            bodies["MagicJson"]["Token"] == "[redacted]"
            and bodies["MagicJson"]["Action"] == "SaveProblemsData"
        )
    finally:
        sim.stop()
