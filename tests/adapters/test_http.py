"""FhirClient: headers on every request, what an exchange keeps (and never keeps), token refresh,
network failures, paging."""

import json

import httpx
import pytest
import respx

from adapters.base import Outcome
from adapters.http import MAX_STORED_BODY, REDACTED, AuthUnavailable, FhirClient, RequestSpec, redact_url

BASE = "http://fhir.example.org/fhir"


class StaticTokens:
    """A token source handing out tok-1, tok-2, ... and remembering invalidations."""

    def __init__(self):
        self.issued = 0
        self.current = ""
        self.invalidated = []

    def token(self, http, *, correlation_id=""):
        if not self.current:
            self.issued += 1
            self.current = f"tok-{self.issued}"
        return self.current

    def invalidate(self, token):
        self.invalidated.append(token)
        if token == self.current:
            self.current = ""


@pytest.fixture
def client():
    c = FhirClient(BASE, connect_timeout=1, read_timeout=2)
    yield c
    c.close()


@respx.mock
def test_every_request_carries_ids_accept_and_prefer(client):
    route = respx.get(f"{BASE}/Patient/pat-1").mock(
        return_value=httpx.Response(200, json={"resourceType": "Patient"})
    )
    client.read("Patient", "pat-1", correlation_id="corr-1")
    client.read("Patient", "pat-1", correlation_id="corr-1")
    first, second = (call.request.headers for call in route.calls)
    assert first["X-Correlation-ID"] == "corr-1"
    assert first["Accept"] == "application/fhir+json"
    assert first["Prefer"] == "return=representation"
    assert first["X-Request-ID"] != second["X-Request-ID"]


@respx.mock
def test_create_sends_if_none_exist_and_update_sends_if_match(client):
    post = respx.post(f"{BASE}/Observation").mock(return_value=httpx.Response(201, json={}))
    put = respx.put(f"{BASE}/Patient/p1").mock(return_value=httpx.Response(200, json={}))
    patch = respx.patch(f"{BASE}/Patient/p1").mock(return_value=httpx.Response(200, json={}))
    client.create({"resourceType": "Observation"}, if_none_exist="identifier=s|1")
    client.update({"resourceType": "Patient", "id": "p1"}, version="3")
    client.patch("Patient", "p1", [{"op": "add", "path": "/active", "value": True}], version="3")
    assert post.calls[0].request.headers["If-None-Exist"] == "identifier=s|1"
    assert post.calls[0].request.headers["Content-Type"] == "application/fhir+json"
    assert put.calls[0].request.headers["If-Match"] == 'W/"3"'
    assert patch.calls[0].request.headers["Content-Type"] == "application/json-patch+json"
    assert patch.calls[0].request.headers["If-Match"] == 'W/"3"'
    assert json.loads(patch.calls[0].request.content) == [{"op": "add", "path": "/active", "value": True}]


@respx.mock
def test_exchange_keeps_no_secret_and_hashes_the_body():
    tokens = StaticTokens()
    client = FhirClient(BASE, auth=tokens)
    respx.post(f"{BASE}/Observation").mock(
        return_value=httpx.Response(
            201, json={"resourceType": "Observation", "id": "9", "access_token": "leak"}
        )
    )
    reply = client.create({"resourceType": "Observation", "status": "final"}, correlation_id="c")
    ex = reply.exchange
    assert ex.request_headers["authorization"] == REDACTED
    assert "tok-1" not in json.dumps(vars(ex))
    assert "leak" not in ex.response_body
    assert len(ex.request_body_hash) == 64
    assert ex.status == 201 and ex.latency_ms is not None and ex.request_id
    assert client.journal == reply.exchanges


def test_query_secrets_are_redacted():
    assert "s3cret" not in redact_url("http://x/y?access_token=s3cret&patient=1")
    assert "patient=1" in redact_url("http://x/y?access_token=s3cret&patient=1")


@respx.mock
def test_long_operation_outcome_keeps_its_text(client):
    issue = {"severity": "error", "code": "processing", "diagnostics": "the reading already exists"}
    padding = [{"severity": "information", "code": "informational", "diagnostics": "x" * 200}] * 40
    body = {"resourceType": "OperationOutcome", "issue": [issue, *padding]}
    respx.post(f"{BASE}/Observation").mock(return_value=httpx.Response(400, json=body))
    reply = client.create({"resourceType": "Observation"})
    assert len(reply.exchange.response_body) <= MAX_STORED_BODY + 40
    assert "the reading already exists" in reply.exchange.response_body


@respx.mock
def test_a_401_refreshes_the_token_once_then_gives_up():
    tokens = StaticTokens()
    client = FhirClient(BASE, auth=tokens)
    route = respx.get(f"{BASE}/Patient/p").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json={})]
    )
    reply = client.read("Patient", "p")
    assert reply.status == 200 and tokens.invalidated == ["tok-1"]
    assert [c.request.headers["Authorization"] for c in route.calls] == ["Bearer tok-1", "Bearer tok-2"]
    assert len(reply.exchanges) == 2

    route.side_effect = [httpx.Response(401), httpx.Response(401)]
    reply = client.read("Patient", "p")
    assert reply.status == 401 and len(reply.exchanges) == 2


@respx.mock
def test_no_token_means_nothing_is_sent():
    class Broken:
        def token(self, http, *, correlation_id=""):
            raise AuthUnavailable("token endpoint answered HTTP 400 (invalid_client)", Outcome.TERMINAL)

        def invalidate(self, token):
            pass

    route = respx.post(f"{BASE}/Observation").mock(return_value=httpx.Response(201))
    reply = FhirClient(BASE, auth=Broken()).create({"resourceType": "Observation"})
    assert not route.called
    assert reply.failure.outcome is Outcome.TERMINAL and "invalid_client" in reply.failure.message


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectError("refused"), Outcome.RETRYABLE),
        (httpx.ConnectTimeout("slow"), Outcome.RETRYABLE),
        (httpx.PoolTimeout("busy"), Outcome.RETRYABLE),
        (httpx.ReadTimeout("stalled"), Outcome.AMBIGUOUS),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), Outcome.AMBIGUOUS),
        (httpx.ReadError("Connection reset by peer"), Outcome.AMBIGUOUS),
    ],
)
@respx.mock
def test_network_failures_never_raise(client, exc, outcome):
    respx.post(f"{BASE}/Observation").mock(side_effect=exc)
    reply = client.create({"resourceType": "Observation"})
    assert reply.status is None and reply.failure.outcome is outcome
    assert reply.exchange.error and reply.exchange.status is None


@respx.mock
def test_search_all_follows_next_links(client):
    page1 = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": f"{BASE}/Observation?patient=p&_offset=1"}],
        "entry": [{"resource": {"resourceType": "Observation", "id": "1"}}],
    }
    page2 = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": "2"}}],
    }
    respx.get(f"{BASE}/Observation", params={"patient": "p", "_offset": "1"}).mock(
        return_value=httpx.Response(200, json=page2)
    )
    respx.get(f"{BASE}/Observation", params={"patient": "p"}).mock(
        return_value=httpx.Response(200, json=page1)
    )
    found = client.search_all("Observation", {"patient": "p"})
    assert [r["id"] for r in found.resources] == ["1", "2"] and len(found.replies) == 2 and found.complete
    assert client.search_all("Observation", {"patient": "p"}, max_pages=1).complete is False


def test_planned_request_matches_the_spec(client):
    spec = client.create_spec({"resourceType": "Observation"}, if_none_exist="identifier=s|1")
    planned = spec.planned(correlation_id="c", standard_headers=client.standard_headers(spec))
    assert planned.method == "POST" and planned.url == f"{BASE}/Observation"
    assert planned.headers["If-None-Exist"] == "identifier=s|1"
    assert planned.headers["X-Correlation-ID"] == "c"


def test_secret_fields_are_left_out_of_plans():
    spec = RequestSpec("POST", "http://x/GetToken", json={"Username": "u", "Password": "p"}, fhir=False)
    assert spec.planned().body["Password"] == REDACTED
