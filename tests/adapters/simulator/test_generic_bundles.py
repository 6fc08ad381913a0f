"""generic profile beyond the conformance smoke: deletions, strict conditional criteria, transaction
rollback and ordering, batch isolation, Bundle errors, faults and SMART scopes on Bundles; and the vendor
profiles still refusing all of it."""

import base64
import json
import threading
import time
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.simulator import start_simulator
from adapters.simulator.profiles.generic import GenericProfile

from .conftest import MRN, WB, issue, vital
from .test_concurrency import run_threads
from .test_smart import assertion, public_pem, token_request

FHIR_JSON = {"Content-Type": "application/fhir+json"}
DEMO_RESOURCES = 603


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def bundle(*entries, kind="transaction"):
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def entry(method, url, resource=None, full_url="", **request):
    item = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        item["resource"] = resource
    if full_url:
        item["fullUrl"] = full_url
    return item


def statuses(response):
    return [e["response"]["status"] for e in response.json()["entry"]]


def binary_patch(ops):
    data = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


def stored_count(sim) -> int:
    return httpx.get(f"{sim.origin}/_sim/health").json()["resources"]


def nothing_stored(sim):
    assert stored_count(sim) == DEMO_RESOURCES
    assert sim.count_by_identifier(WB) == {}


# -- delete ----------------------------------------------------------------------------------------


def test_delete_is_version_aware_with_if_match(generic, client):
    url = f"{generic.fhir_base}/Patient/pat-1001"
    stale = client.delete(url, headers={"If-Match": 'W/"7"'})
    assert (
        stale.status_code == 412 and stale.headers["etag"] == 'W/"1"' and issue(stale)["code"] == "conflict"
    )
    assert client.get(url).status_code == 200
    deleted = client.delete(url, headers={"If-Match": 'W/"1"'})
    assert deleted.status_code == 204 and deleted.content == b"" and deleted.headers["etag"] == 'W/"2"'
    gone = client.get(url)
    assert gone.status_code == 410 and issue(gone)["code"] == "deleted"
    assert client.delete(url, headers={"If-Match": 'W/"2"'}).status_code == 410  # nothing current to match
    again = client.delete(url)
    assert again.status_code == 204 and "etag" not in again.headers
    assert client.get(f"{url}/_history").json()["total"] == 2  # a repeated delete records nothing
    # Version-aware writes to a deleted resource do not bring it back.
    patient = client.get(f"{url}/_history/1").json()
    assert client.put(url, json=patient, headers={"If-Match": 'W/"2"'}).status_code == 410
    patch = [{"op": "replace", "path": "/gender", "value": "other"}]
    patched = client.patch(url, json=patch, headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 410
    assert client.get(url).status_code == 410
    unknown = client.delete(f"{generic.fhir_base}/Patient/nobody")
    assert unknown.status_code == 204
    assert client.get(f"{generic.fhir_base}/Patient/nobody/_history").status_code == 404


def test_an_update_brings_a_deleted_resource_back_as_its_next_version(generic, client):
    url = f"{generic.fhir_base}/Patient/pat-1002"
    patient = client.get(url).json()
    assert client.delete(url).status_code == 204
    revived = client.put(url, json=patient | {"gender": "other"})
    assert revived.status_code == 201 and revived.headers["etag"] == 'W/"3"'
    assert revived.headers["location"].endswith("/Patient/pat-1002/_history/3")
    history = client.get(f"{url}/_history").json()["entry"]
    assert [(e["request"]["method"], e["response"]["status"]) for e in history] == [
        ("PUT", "201 Created"),
        ("DELETE", "204 No Content"),
        ("POST", "201 Created"),
    ]
    assert client.get(f"{url}/_history/2").status_code == 410
    assert client.get(f"{url}/_history/1").json()["gender"] == patient["gender"]
    assert client.get(url).json()["gender"] == "other"


def test_a_deleted_resource_leaves_searches_and_conditional_creates(generic, client):
    headers = {"If-None-Exist": f"identifier={WB}|w-del"}
    first = client.post(f"{generic.fhir_base}/Observation", json=vital(write_id="w-del"), headers=headers)
    assert first.status_code == 201
    assert client.delete(f"{generic.fhir_base}/Observation/{first.json()['id']}").status_code == 204
    search = client.get(f"{generic.fhir_base}/Observation", params={"identifier": f"{WB}|w-del"})
    assert search.json()["total"] == 0
    second = client.post(f"{generic.fhir_base}/Observation", json=vital(write_id="w-del"), headers=headers)
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    assert generic.count_by_identifier(WB) == {"w-del": 1}


def test_new_ids_never_reuse_a_deleted_id(client):
    sim = start_simulator("generic", seed=[{"resourceType": "Patient", "id": "1"}])
    try:
        assert client.delete(f"{sim.fhir_base}/Patient/1").status_code == 204
        created = client.post(f"{sim.fhir_base}/Patient", json={"resourceType": "Patient"}).json()
        assert created["id"] != "1"
        assert client.get(f"{sim.fhir_base}/Patient/1").status_code == 410
    finally:
        sim.stop()


# -- conditional update and delete -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("DELETE", "Patient?foo=bar", {}),  # an unknown parameter must not match everything
        ("DELETE", "Patient?identifier=", {}),
        ("DELETE", "Patient?identifier:not=urn:example:mrn|MRN1001", {}),
        ("DELETE", "Patient?_count=1", {}),
        ("DELETE", "Patient", {}),
        ("PUT", "Patient?gender=female", {}),
        ("PUT", "Patient", {}),
        ("POST", "Patient", {"If-None-Exist": "foo=bar"}),
    ],
)
def test_conditional_criteria_that_could_widen_the_match_are_400(generic, client, method, target, headers):
    body = {"resourceType": "Patient", "identifier": [{"system": WB, "value": "widen"}]}
    kwargs = {} if method == "DELETE" else {"json": body}
    r = client.request(method, f"{generic.fhir_base}/{target}", headers=headers, **kwargs)
    assert r.status_code == 400, r.text
    assert issue(r)["severity"] == "error"
    nothing_stored(generic)
    assert client.get(f"{generic.fhir_base}/Patient/pat-1001").json()["meta"]["versionId"] == "1"


def test_conditional_update_refuses_an_id_that_is_not_the_match(generic, client):
    url = f"{generic.fhir_base}/Patient?identifier={MRN}|MRN1001"
    other = client.put(url, json={"resourceType": "Patient", "id": "pat-1002", "gender": "other"})
    assert other.status_code == 400 and issue(other)["expression"] == ["id"]
    unmatched = f"{generic.fhir_base}/Patient?identifier={WB}|new-one"
    body = {"resourceType": "Patient", "identifier": [{"system": WB, "value": "new-one"}]}
    taken = client.put(unmatched, json=body | {"id": "pat-1003"})  # exists, does not match
    assert taken.status_code == 400
    versioned = client.put(unmatched, json=body, headers={"If-Match": 'W/"1"'})
    assert versioned.status_code == 412
    assert client.put(unmatched, json=body | {"id": "bad id!"}).status_code == 400
    nothing_stored(generic)
    for patient in ("pat-1001", "pat-1002", "pat-1003"):
        assert client.get(f"{generic.fhir_base}/Patient/{patient}").json()["meta"]["versionId"] == "1"
    chosen = client.put(unmatched, json=body | {"id": "chosen-id"})
    assert chosen.status_code == 201 and chosen.json()["id"] == "chosen-id"
    assert chosen.headers["location"].endswith("/Patient/chosen-id/_history/1")


def test_conditional_delete_without_a_match_and_with_if_match(generic, client):
    base = f"{generic.fhir_base}/Patient"
    assert client.delete(base, params={"identifier": f"{WB}|nobody"}).status_code == 204
    versioned = client.delete(base, params={"identifier": f"{WB}|nobody"}, headers={"If-Match": 'W/"1"'})
    assert versioned.status_code == 412
    stale = client.delete(base, params={"identifier": f"{MRN}|MRN1001"}, headers={"If-Match": 'W/"3"'})
    assert stale.status_code == 412
    assert client.get(f"{base}/pat-1001").status_code == 200
    done = client.delete(base, params={"identifier": f"{MRN}|MRN1001"}, headers={"If-Match": 'W/"1"'})
    assert done.status_code == 204 and client.get(f"{base}/pat-1001").status_code == 410


def test_concurrent_conditional_updates_create_one_resource(generic):
    url = f"{generic.fhir_base}/Patient?identifier={WB}|once"

    def work(n):
        with httpx.Client(timeout=10) as c:
            for i in range(20):
                body = {
                    "resourceType": "Patient",
                    "identifier": [{"system": WB, "value": "once"}],
                    "gender": "other",
                }
                assert c.put(url, json=body | {"birthDate": f"2000-01-{i + 1:02d}"}).status_code in (200, 201)

    run_threads(5, work)
    assert generic.count_by_identifier(WB) == {"once": 1}
    [patient] = generic.resources("Patient", identifier=f"{WB}|once")
    assert patient["meta"]["versionId"] == "100"  # one create, 99 updates, none lost


# -- transactions ----------------------------------------------------------------------------------


def test_a_failed_transaction_undoes_updates_deletes_creates_and_the_identifier_index(generic, client):
    base = generic.fhir_base
    patient = client.get(f"{base}/Patient/pat-1001").json()
    renamed = patient | {"identifier": [{"system": WB, "value": "renamed"}]}
    r = client.post(
        base,
        json=bundle(
            entry("DELETE", "Task/task-1001"),
            entry("PUT", "Patient/pat-1001", renamed),
            entry("POST", "Observation", vital(write_id="tx-1")),
            entry(
                "PUT", "Patient/pat-1002", {"resourceType": "Patient", "id": "pat-1002", "identifier": "x"}
            ),
        ),
        headers=FHIR_JSON,
    )
    assert r.status_code == 422
    problem = issue(r)
    assert problem["expression"] == ["Bundle.entry[3].resource.identifier"]
    assert (
        "entry 3 (PUT Patient/pat-1002)" in problem["diagnostics"]
        and "nothing was stored" in problem["diagnostics"]
    )
    nothing_stored(generic)
    assert client.get(f"{base}/Task/task-1001").json()["meta"]["versionId"] == "1"
    assert client.get(f"{base}/Patient/pat-1001/_history").json()["total"] == 1
    assert [p["id"] for p in generic.resources("Patient", identifier=f"{MRN}|MRN1001")] == ["pat-1001"]
    assert generic.resources("Patient", identifier=f"{WB}|renamed") == []


def test_transaction_order_conditional_references_and_answers_in_request_order(generic, client):
    base = generic.fhir_base
    new_patient = urn()
    r = client.post(
        base,
        json=bundle(
            entry("GET", f"Patient?identifier={MRN}|MRN1001"),
            entry(
                "POST",
                "Patient",
                {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "MRN1001"}]},
                full_url=new_patient,
                ifNoneExist=f"identifier={MRN}|MRN1001",
            ),
            entry("POST", "Observation", vital(write_id="tx-new", subject={"reference": new_patient})),
            entry("DELETE", f"Patient?identifier={MRN}|MRN1001"),
            entry(
                "POST",
                "Observation",
                vital(write_id="tx-ref", subject={"reference": f"Patient?identifier={MRN}|MRN1005"}),
            ),
        ),
        headers=FHIR_JSON,
    )
    assert r.status_code == 200, r.text
    # DELETE ran first, so the conditional create found nothing and created; GET ran last and sees it.
    assert statuses(r) == ["200 OK", "201 Created", "201 Created", "204 No Content", "201 Created"]
    answers = r.json()["entry"]
    created_id = answers[1]["resource"]["id"]
    assert created_id != "pat-1001"
    assert [e["resource"]["id"] for e in answers[0]["resource"]["entry"]] == [created_id]
    assert answers[2]["resource"]["subject"] == {"reference": f"Patient/{created_id}"}
    assert answers[4]["resource"]["subject"] == {"reference": "Patient/pat-1005"}
    assert answers[1]["response"]["location"] == f"Patient/{created_id}/_history/1"
    assert answers[1]["fullUrl"] == f"{base}/Patient/{created_id}"
    assert client.get(f"{base}/Patient/pat-1001").status_code == 410


def test_transaction_patch_entry_gets_urn_references_resolved(generic, client):
    owner = urn()
    ops = [{"op": "add", "path": "/owner", "value": {"reference": owner}}]
    r = client.post(
        generic.fhir_base,
        json=bundle(
            entry("PATCH", "Task/task-1001", binary_patch(ops), ifMatch='W/"1"'),
            entry("POST", "Practitioner", {"resourceType": "Practitioner"}, full_url=owner),
        ),
        headers=FHIR_JSON,
    )
    assert r.status_code == 200, r.text
    practitioner = r.json()["entry"][1]["resource"]["id"]
    task = client.get(f"{generic.fhir_base}/Task/task-1001").json()
    assert task["owner"] == {"reference": f"Practitioner/{practitioner}"} and task["meta"]["versionId"] == "2"


SHARED = urn()


@pytest.mark.parametrize(
    ("entries", "status"),
    [
        ([entry("POST", "Observation", vital(write_id="r", subject={"reference": urn()}))], 400),
        (
            [
                entry(
                    "POST",
                    "Observation",
                    vital(write_id="r", subject={"reference": f"Patient?identifier={WB}|no"}),
                )
            ],
            412,
        ),
        (
            [entry("POST", "Observation", vital(write_id="r", subject={"reference": "Patient?gender=male"}))],
            400,
        ),
        (
            [
                entry("DELETE", "Task/task-1001"),
                entry("PUT", "Task/task-1001", {"resourceType": "Task", "id": "task-1001"}),
            ],
            400,
        ),
        (
            [
                entry("POST", "Patient", {"resourceType": "Patient"}, full_url=SHARED),
                entry("POST", "Patient", {"resourceType": "Patient"}, full_url=SHARED),
            ],
            400,
        ),
        ([entry("POST", "Patient", {"resourceType": "Patient"}, ifNoneExist="foo=bar")], 400),
        ([entry("POST", "Patient", {"resourceType": "Patient"}, ifNoneExist=f"identifier={MRN}|")], 412),
        ([{"resource": {"resourceType": "Patient"}}], 400),
        ([entry("PATCH", "Task/task-1001", {"resourceType": "Parameters"})], 400),
        ([entry("POST", "http://elsewhere.example/fhir/Patient", {"resourceType": "Patient"})], 400),
        ([entry("GET", "Patient/nobody")], 404),
        ([entry("PUT", "Task/task-1001", {"resourceType": "Task", "id": "task-1001"}, ifMatch='W/"9"')], 412),
        (
            [
                entry(
                    "PATCH", "Task/task-1001", binary_patch([{"op": "test", "path": "/status", "value": "x"}])
                )
            ],
            422,
        ),
        ([entry("POST", "Spaceship", {"resourceType": "Spaceship"})], 404),
    ],
)
def test_a_transaction_with_a_failing_entry_stores_nothing(generic, client, entries, status):
    first = entry("POST", "Observation", vital(write_id="tx-kept"))
    r = client.post(generic.fhir_base, json=bundle(first, *entries), headers=FHIR_JSON)
    assert r.status_code == status, r.text
    assert issue(r)["expression"][0].startswith("Bundle.entry[")
    nothing_stored(generic)
    assert client.get(f"{generic.fhir_base}/Task/task-1001").json()["meta"]["versionId"] == "1"


def test_a_conditional_create_matching_several_fails_the_transaction(generic, client):
    for _ in range(2):
        client.post(f"{generic.fhir_base}/Observation", json=vital(write_id="twice"))
    r = client.post(
        generic.fhir_base,
        json=bundle(
            entry(
                "POST", "Patient", {"resourceType": "Patient", "identifier": [{"system": WB, "value": "p"}]}
            ),
            entry("POST", "Observation", vital(write_id="twice"), ifNoneExist=f"identifier={WB}|twice"),
        ),
        headers=FHIR_JSON,
    )
    assert r.status_code == 412 and issue(r)["code"] == "duplicate"
    assert generic.count_by_identifier(WB) == {"twice": 2}


def test_prefer_shapes_the_entry_answers(generic, client):
    minimal = client.post(
        generic.fhir_base,
        json=bundle(entry("POST", "Observation", vital(write_id="m"))),
        headers=FHIR_JSON | {"Prefer": "return=minimal"},
    )
    [answer] = minimal.json()["entry"]
    assert "resource" not in answer
    assert set(answer["response"]) == {"status", "location", "etag", "lastModified"}
    informed = client.post(
        generic.fhir_base,
        json=bundle(entry("POST", "Observation", vital(write_id="o"))),
        headers=FHIR_JSON | {"Prefer": "return=OperationOutcome"},
    )
    [answer] = informed.json()["entry"]
    assert answer["response"]["outcome"]["issue"][0]["severity"] == "information"


# -- batches ---------------------------------------------------------------------------------------


def test_batch_entries_stand_alone(generic, client):
    patient_urn = urn()
    r = client.post(
        generic.fhir_base,
        json=bundle(
            entry(
                "POST",
                "Patient",
                {"resourceType": "Patient", "identifier": [{"system": WB, "value": "b"}]},
                patient_urn,
            ),
            entry("POST", "Observation", vital(write_id="depends", subject={"reference": patient_urn})),
            {"request": {"method": "POST"}},
            entry("PUT", "Patient/pat-1001", {"resourceType": "Patient", "id": "pat-1001"}, ifMatch='W/"5"'),
            entry("DELETE", "Task/task-1001"),
            entry("POST", "Observation", vital(write_id="alone")),
            kind="batch",
        ),
        headers=FHIR_JSON,
    )
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "batch-response"
    assert [s.split()[0] for s in statuses(r)] == ["201", "400", "400", "412", "204", "201"]
    refused = r.json()["entry"][1]["response"]["outcome"]["issue"][0]
    assert "batch entries must not depend on each other" in refused["diagnostics"]
    assert generic.count_by_identifier(WB) == {"b": 1, "alone": 1}
    assert client.get(f"{generic.fhir_base}/Task/task-1001").status_code == 410
    assert client.get(f"{generic.fhir_base}/Patient/pat-1001").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{nope", FHIR_JSON, 400),
        (b'{"resourceType": "Patient"}', FHIR_JSON, 400),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": []}', FHIR_JSON, 400),
        (b'{"resourceType": "Bundle", "type": "transaction", "entry": {}}', FHIR_JSON, 400),
        (b"<Bundle/>", {"Content-Type": "application/fhir+xml"}, 415),
    ],
)
def test_what_is_not_a_transaction_or_batch_is_refused(generic, client, content, headers, status):
    r = client.post(generic.fhir_base, content=content, headers=headers)
    assert r.status_code == status
    assert issue(r)["severity"] == "error"
    nothing_stored(generic)


def test_an_empty_transaction_answers_an_empty_response(generic, client):
    r = client.post(generic.fhir_base, json=bundle(), headers=FHIR_JSON)
    assert r.status_code == 200 and r.json() == {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [],
    }


def test_readers_never_see_half_a_transaction(generic, monkeypatch):
    written = threading.Event()
    create = GenericProfile.create

    def create_then_pause(self, req, resource_type):
        response = create(self, req, resource_type)
        if resource_type == "Observation":  # written; the transaction's Patient is still to come
            written.set()
            time.sleep(0.3)
        return response

    monkeypatch.setattr(GenericProfile, "create", create_then_pause)
    patient_urn = urn()
    body = bundle(
        entry("POST", "Observation", vital(write_id="iso", subject={"reference": patient_urn})),
        entry(
            "POST",
            "Patient",
            {"resourceType": "Patient", "identifier": [{"system": WB, "value": "iso"}]},
            patient_urn,
        ),
    )
    answers = []
    poster = threading.Thread(
        target=lambda: answers.append(httpx.post(generic.fhir_base, json=body, timeout=10))
    )
    poster.start()
    assert written.wait(5)
    # Read mid-transaction: the read waits for the commit, then sees both writes.
    observations = generic.resources("Observation", identifier=f"{WB}|iso")
    patients = generic.resources("Patient", identifier=f"{WB}|iso")
    poster.join(timeout=10)
    assert answers[0].status_code == 200
    assert (len(observations), len(patients)) == (1, 1)


# -- faults ----------------------------------------------------------------------------------------


def two_writes():
    return bundle(
        entry("POST", "Observation", vital(write_id="f-1")),
        entry("POST", "Observation", vital(write_id="f-2", code="8867-4")),
    )


def test_timeout_after_commit_commits_the_whole_transaction(generic):
    generic.set_faults("timeout_after_commit=1.0,stall_seconds=1,seed=3")
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as c, pytest.raises(httpx.ReadTimeout):
        c.post(generic.fhir_base, json=two_writes(), headers=FHIR_JSON)
    assert generic.count_by_identifier(WB) == {"f-1": 1, "f-2": 1}
    assert generic.faults()["fired"]["timeout_after_commit"] == 1


@pytest.mark.parametrize("spec", ["error_5xx=1.0,seed=1", "drop_connection=1.0", "rate_limit=1.0"])
def test_faults_before_serving_store_no_entry(generic, client, spec):
    generic.set_faults(spec)
    try:
        r = client.post(generic.fhir_base, json=two_writes(), headers=FHIR_JSON)
        assert r.status_code in (429, 500, 502)
    except httpx.RemoteProtocolError:
        assert spec.startswith("drop_connection")
    nothing_stored(generic)


def test_stale_version_fails_a_transaction_but_the_concurrent_edit_stands(generic, client):
    patient = client.get(f"{generic.fhir_base}/Patient/pat-1001").json()
    generic.set_faults("stale_version=1.0,seed=2")
    body = bundle(
        entry("POST", "Observation", vital(write_id="s-1")),
        entry("PUT", "Patient/pat-1001", patient | {"gender": "other"}, ifMatch='W/"1"'),
    )
    r = client.post(generic.fhir_base, json=body, headers=FHIR_JSON)
    assert r.status_code == 412 and issue(r)["code"] == "conflict"
    assert generic.count_by_identifier(WB) == {}
    current = client.get(f"{generic.fhir_base}/Patient/pat-1001").json()
    assert current["meta"]["versionId"] == "2" and current["gender"] == patient["gender"]
    assert generic.faults()["fired"]["stale_version"] == 1
    batch = client.post(generic.fhir_base, json=body | {"type": "batch"}, headers=FHIR_JSON)
    assert [s.split()[0] for s in statuses(batch)] == ["201", "412"]
    generic.set_faults("stale_version=1.0,seed=2")
    assert client.post(generic.fhir_base, json=two_writes(), headers=FHIR_JSON).status_code == 200
    assert generic.faults()["fired"]["stale_version"] == 0  # no If-Match entry: not version-aware


def test_stale_version_on_conditional_writes_leaves_the_concurrent_edit(generic, client):
    generic.set_faults("stale_version=1.0,seed=2")
    url = f"{generic.fhir_base}/Patient?identifier={MRN}|MRN1001"
    body = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "MRN1001"}], "gender": "other"}
    patient = f"{generic.fhir_base}/Patient/pat-1001"
    assert client.put(url, json=body, headers={"If-Match": 'W/"1"'}).status_code == 412
    assert client.get(patient).json()["meta"]["versionId"] == "2"
    assert client.delete(url, headers={"If-Match": 'W/"2"'}).status_code == 412
    assert client.get(patient).json()["meta"]["versionId"] == "3"
    in_bundle = bundle(entry("PUT", f"Patient?identifier={MRN}|MRN1001", body, ifMatch='W/"3"'))
    assert client.post(generic.fhir_base, json=in_bundle, headers=FHIR_JSON).status_code == 412
    current = client.get(patient).json()
    assert current["meta"]["versionId"] == "4" and current["gender"] != "other"
    assert generic.faults()["fired"]["stale_version"] == 3


# -- SMART scopes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def smart(key):
    sim = start_simulator("generic", auth="smart", public_keys=[public_pem(key)])
    yield sim
    sim.stop()


def bearer(sim, key, client, scope):
    token = token_request(client, sim.token_url, assertion(key, sim.token_url), scope=scope).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def test_every_bundle_entry_needs_its_scope(smart, key, client):
    patients_only = bearer(smart, key, client, "system/Patient.cruds")
    body = bundle(
        entry("POST", "Patient", {"resourceType": "Patient", "identifier": [{"system": WB, "value": "s"}]}),
        entry("POST", "Observation", vital(write_id="scoped")),
    )
    for kind in ("transaction", "batch"):
        r = client.post(smart.fhir_base, json=body | {"type": kind}, headers=FHIR_JSON | patients_only)
        assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert "entry 1 (POST Observation)" in issue(r)["diagnostics"]
    nothing_stored(smart)
    both = bearer(smart, key, client, "system/Patient.c system/Observation.c")
    assert client.post(smart.fhir_base, json=body, headers=FHIR_JSON | both).status_code == 200
    assert smart.count_by_identifier(WB) == {"s": 1, "scoped": 1}
    assert [r["status"] for r in smart.requests(10) if r["path"] == "/fhir"] == [403, 403, 200]


def test_delete_and_conditional_writes_need_their_scopes(smart, key, client):
    no_delete = bearer(smart, key, client, "system/Patient.crus")
    url = f"{smart.fhir_base}/Patient/pat-1001"
    assert client.delete(url, headers=no_delete).status_code == 403
    assert (
        client.delete(f"{smart.fhir_base}/Patient?identifier={MRN}|MRN1001", headers=no_delete).status_code
        == 403
    )
    in_bundle = bundle(entry("DELETE", "Patient/pat-1001"))
    assert client.post(smart.fhir_base, json=in_bundle, headers=FHIR_JSON | no_delete).status_code == 403
    assert client.get(url, headers=no_delete).status_code == 200
    no_update = bearer(smart, key, client, "system/Patient.crds")
    body = {"resourceType": "Patient", "identifier": [{"system": WB, "value": "u"}]}
    put = client.put(f"{smart.fhir_base}/Patient?identifier={WB}|u", json=body, headers=no_update)
    assert put.status_code == 403
    nothing_stored(smart)
    allowed = bearer(smart, key, client, "system/Patient.cruds")
    assert client.delete(url, headers=allowed).status_code == 204


# -- the request log and the vendor profiles -------------------------------------------------------


def test_the_request_log_redacts_secrets_in_bundles(generic, client):
    patient = {"resourceType": "Patient", "extension": [{"url": "urn:x", "password": "hunter2"}]}
    client.post(generic.fhir_base, json=bundle(entry("POST", "Patient", patient)), headers=FHIR_JSON)
    [logged] = generic.requests(1)
    assert logged["path"] == "/fhir" and "hunter2" not in logged["body"] and "[redacted]" in logged["body"]


@pytest.mark.parametrize("profile", ["epic", "athena", "veradigm"])
def test_vendor_profiles_still_refuse_delete_bundles_and_conditional_writes(client, profile):
    sim = start_simulator(profile)
    try:
        base = sim.fhir_base
        criteria = f"identifier={MRN}|MRN1001"
        refused = [
            client.delete(f"{base}/Patient/pat-1001"),
            client.delete(f"{base}/Patient?{criteria}"),
            client.put(f"{base}/Patient?{criteria}", json={"resourceType": "Patient"}),
            client.post(base, json=bundle(entry("DELETE", "Patient/pat-1001")), headers=FHIR_JSON),
            client.post(
                base, json=bundle(entry("DELETE", "Patient/pat-1001"), kind="batch"), headers=FHIR_JSON
            ),
        ]
        assert [r.status_code for r in refused] == [405] * 5
        assert all(issue(r)["code"] == "not-supported" for r in refused)
        assert client.get(f"{base}/Patient/pat-1001").status_code == 200
        assert stored_count(sim) == DEMO_RESOURCES
        statement = client.get(f"{base}/metadata").json()
        assert "interaction" not in statement["rest"][0]
        declared = {i["code"] for r in statement["rest"][0]["resource"] for i in r["interaction"]}
        assert "delete" not in declared
        assert {r["conditionalUpdate"] for r in statement["rest"][0]["resource"]} == {False}
    finally:
        sim.stop()


def test_a_stalled_transaction_answer_holds_no_lock(generic, client):
    """The store lock is held only while a Bundle is processed, not while its answer is stalled."""
    generic.set_faults("timeout_after_commit=1.0,stall_seconds=2")
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as stalled, pytest.raises(httpx.ReadTimeout):
        stalled.post(generic.fhir_base, json=two_writes(), headers=FHIR_JSON)
    generic.clear_faults()
    started = time.perf_counter()
    assert client.get(f"{generic.fhir_base}/Patient/pat-1001").status_code == 200
    assert time.perf_counter() - started < 1.0
