"""Credentials go to the tenant and nowhere else: search next links, redirects and Location headers that
point at another host are never requested, over real sockets, and each refusal is handed to the domain."""

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters import auth
from adapters.base import Outcome, WriteRequest
from adapters.generic.adapter import GenericFhirAdapter
from adapters.http import FhirClient, RequestSpec, UrlRoot
from tests.adapters.servers import Answer, RecordingServer, bundle
from tests.adapters.support import UID, target

TOKEN = "tok-must-stay-home"


@pytest.fixture(scope="module")
def key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(autouse=True)
def _fresh_tokens():
    auth.clear_token_cache()
    yield
    auth.clear_token_cache()


@pytest.fixture
def elsewhere():
    server = RecordingServer()
    yield server
    server.stop()


def ehr_server(pages: dict[str, Answer]) -> RecordingServer:
    """An EHR that serves a token at /oauth2/token and `pages` by path prefix (first match wins)."""

    def respond(method: str, path: str) -> Answer:
        if path.startswith("/oauth2/token"):
            return Answer(200, {"access_token": TOKEN, "token_type": "bearer", "expires_in": 300})
        for prefix, answer in pages.items():
            if path.startswith(prefix):
                return answer
        return Answer(404, {"resourceType": "OperationOutcome", "issue": []})

    return RecordingServer(respond)


def smart_adapter(ehr: RecordingServer, key_pem: str, monkeypatch) -> GenericFhirAdapter:
    monkeypatch.setenv("WB_OUTBOUND_TEST_KEY", key_pem)
    cfg = target(
        "generic",
        base_url=f"{ehr.origin}/fhir",
        auth_mode="smart",
        client_id="writeback-client",
        token_url=f"{ehr.origin}/oauth2/token",
        private_key_ref="env:WB_OUTBOUND_TEST_KEY",
        enabled=frozenset({("Observation", "create")}),
    )
    return GenericFhirAdapter(cfg)


def observation_request() -> WriteRequest:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/pat-1001"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    return WriteRequest(
        write_uid=UID,
        resource_type="Observation",
        operation="create",
        resource=resource,
        correlation_id="corr-outbound",
        patient_ref="Patient/pat-1001",
    )


def test_a_next_link_to_another_host_is_not_followed_and_no_token_leaks(elsewhere, key_pem, monkeypatch):
    first_page = bundle(next_url=f"{elsewhere.origin}/fhir/Observation?page=2")
    with ehr_server({"/fhir/Observation": Answer(200, first_page)}) as ehr:
        adapter = smart_adapter(ehr, key_pem, monkeypatch)
        try:
            found = adapter.find_by_identifier(observation_request())
            refusals = adapter.take_refusals()
        finally:
            adapter.close()
        fhir_calls = [s for s in ehr.seen if s.path.startswith("/fhir/")]
    assert elsewhere.seen == []  # not a single byte: no Authorization header could leak
    assert fhir_calls and all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in fhir_calls)
    # An unread page is not "not there": the check by read stays undecided (never a resend).
    assert found.found is None and found.outcome is Outcome.TERMINAL
    assert "outside the tenant" in found.message
    assert [(r.source, r.correlation_id) for r in refusals] == [("next-link", "corr-outbound")]
    assert refusals[0].url.startswith(elsewhere.origin)
    assert found.exchanges[-1].error.startswith("refused:") and found.exchanges[-1].status is None
    assert adapter.take_refusals() == []  # handed over once


def test_a_next_link_to_another_spelling_of_the_same_host_is_refused(key_pem, monkeypatch):
    # Servers whose configured base differs from how we reach them (localhost vs 127.0.0.1) name their
    # pages under their own spelling: still refused, the safe default (docs/vendors.md).
    with ehr_server({}) as ehr:
        spelled = ehr.origin.replace("127.0.0.1", "localhost")
        page = bundle(next_url=f"{spelled}/fhir/Observation?page=2")
        ehr.respond = lambda method, path: Answer(200, page)
        client = FhirClient(f"{ehr.origin}/fhir")
        try:
            found = client.search_all("Observation", {"patient": "pat-1001"})
        finally:
            client.close()
        assert len(ehr.seen) == 1
    assert not found.complete
    assert [r.source for r in client.refusals] == ["next-link"]


def test_a_next_link_within_the_base_is_followed_with_the_token(key_pem, monkeypatch):
    obs = {"resourceType": "Observation", "id": "o-2"}

    def respond(method: str, path: str) -> Answer:
        if path.startswith("/oauth2/token"):
            return Answer(200, {"access_token": TOKEN, "expires_in": 300})
        if "page=2" in path:
            return Answer(200, bundle(obs))
        return Answer(200, bundle(next_url="Observation?patient=pat-1001&page=2"))  # relative: fine

    with RecordingServer(respond) as ehr:
        adapter = smart_adapter(ehr, key_pem, monkeypatch)
        try:
            found = adapter.client.search_all("Observation", {"patient": "pat-1001"})
        finally:
            adapter.close()
        paged = [s for s in ehr.seen if "page=2" in s.path]
    assert found.complete and [r["id"] for r in found.resources] == ["o-2"]
    assert len(paged) == 1 and paged[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert adapter.take_refusals() == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_to_another_host_is_never_followed(elsewhere, key_pem, monkeypatch, status):
    moved = Answer(status, headers={"Location": f"{elsewhere.origin}/fhir/Observation"})
    with ehr_server({"/fhir/Observation": moved}) as ehr:
        adapter = smart_adapter(ehr, key_pem, monkeypatch)
        try:
            result = adapter.write(observation_request())
            refusals = adapter.take_refusals()
        finally:
            adapter.close()
    assert elsewhere.seen == []
    assert [r.source for r in refusals] == ["redirect"]
    assert "not followed" in result.message
    assert [e.status for e in result.exchanges] == [status]  # the 3xx itself decides the attempt
    # 307/308 were not acted on; after a 301/302 a POST may have been (POST-redirect-GET): check by read.
    assert result.outcome is (Outcome.TERMINAL if status in (307, 308) else Outcome.AMBIGUOUS)


def test_a_redirect_within_the_tenant_is_not_followed_either_but_is_no_refusal(key_pem, monkeypatch):
    with ehr_server({"/fhir/Patient": Answer(307, headers={"Location": "/fhir/Patient/pat-9"})}) as ehr:
        adapter = smart_adapter(ehr, key_pem, monkeypatch)
        try:
            result = adapter.read("Patient", "pat-1")
            refusals = adapter.take_refusals()
        finally:
            adapter.close()
        assert not any(s.path == "/fhir/Patient/pat-9" for s in ehr.seen)
    assert result.resource is None and result.outcome is Outcome.TERMINAL
    assert refusals == []


def test_a_location_header_elsewhere_is_parsed_never_requested(elsewhere, key_pem, monkeypatch):
    created = Answer(
        201,
        {"resourceType": "Observation", "status": "final"},
        headers={"Location": f"{elsewhere.origin}/fhir/Observation/obs-7/_history/3"},
    )
    with ehr_server({"/fhir/Observation": created}) as ehr:
        adapter = smart_adapter(ehr, key_pem, monkeypatch)
        try:
            result = adapter.write(observation_request())
            refusals = adapter.take_refusals()
        finally:
            adapter.close()
    assert result.outcome is Outcome.COMMITTED
    assert (result.resource_id, result.version) == ("obs-7", "3")
    assert elsewhere.seen == [] and refusals == []


def test_a_request_built_outside_the_roots_is_refused_before_any_token_is_fetched(elsewhere):
    class Tokens:
        fetched = 0

        def token(self, http, *, correlation_id=""):
            Tokens.fetched += 1
            return TOKEN

        def invalidate(self, token):
            pass

    client = FhirClient("http://127.0.0.1:9/fhir", auth=Tokens())
    try:
        reply = client.send(RequestSpec("GET", f"{elsewhere.origin}/fhir/Patient/1"), correlation_id="c-1")
    finally:
        client.close()
    assert elsewhere.seen == [] and Tokens.fetched == 0
    assert reply.failure is not None and reply.failure.outcome is Outcome.TERMINAL
    assert [(r.source, r.method) for r in client.refusals] == [("request", "GET")]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/fhir/Observation",  # the same host, another port
        "https://ehr.example.org/fhir/Observation",  # another scheme
        "http://ehr.example.org.evil.example/fhir/Observation",
        "http://ehr.example.org/fhir-other/Observation",  # a sibling path, not under the base
        "http://ehr.example.org/admin/Observation",
        "http://ehr.example.org/fhir/%2e%2e/admin",  # encoded dot segments climb out
        "http://ehr.example.org/fhir/..%5Cadmin",
        "http://evil.example\\@ehr.example.org/fhir/Observation",  # userinfo parser tricks
        "http://user:pw@ehr.example.org/fhir/Observation",
        "http://EHR.example.org./fhir/Observation",  # trailing-dot spelling
    ],
)
def test_what_lies_outside_a_base(url):
    root = UrlRoot.of("http://ehr.example.org/fhir")
    assert not root.admits(httpx.URL(url))


@pytest.mark.parametrize(
    "url",
    [
        "http://ehr.example.org/fhir",
        "http://EHR.example.org:80/fhir/Observation?page=2",
        "http://ehr.example.org/fhir/Observation/1/_history/2",
        "http://ehr.example.org/fhir/../fhir/Observation",  # httpx resolves literal dot segments first
    ],
)
def test_what_lies_under_a_base(url):
    assert UrlRoot.of("http://ehr.example.org/fhir/").admits(httpx.URL(url))


def test_vendor_api_roots_are_allowed_for_requests_but_not_for_next_links():
    from adapters.athena.adapter import AthenaAdapter

    with RecordingServer() as ehr:
        # A next link under the athenaOne API root (the origin) but outside the FHIR base.
        ehr.respond = lambda method, path: Answer(200, bundle(next_url="/v1/195900/patients?page=2"))
        cfg = target("athena", base_url=f"{ehr.origin}/fhir/r4", settings={"practice_id": "195900"})
        adapter = AthenaAdapter(cfg)
        try:
            assert [str(r) for r in adapter.client.roots] == [f"{ehr.origin}/fhir/r4", ehr.origin]
            found = adapter.client.search_all("Observation", {"patient": "a-195900.E-1"})
            refusals = adapter.take_refusals()
        finally:
            adapter.close()
        assert [s.path.split("?")[0] for s in ehr.seen] == ["/fhir/r4/Observation"]
    assert not found.complete
    assert [r.source for r in refusals] == ["next-link"]
