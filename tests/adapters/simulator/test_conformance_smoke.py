"""A FHIR R4 conformance smoke: the REST interactions the write-back engine and its operators rely on,
checked over real sockets with plain httpx (no adapter code), as HL7 FHIR R4 (http.html) defines them.

By default each check runs against a fresh simulator (generic profile). The same checks run against any
FHIR R4 server:

    FHIR_SMOKE_BASE=http://127.0.0.1:8080/fhir \
        python -m pytest -q tests/adapters/simulator/test_conformance_smoke.py

They create Patients and Observations carrying random identifiers of the system below, and delete some of
what they create; point them only at a test server. Where R4 leaves a choice (200 or 204 for a delete,
the status of a failed patch or transaction), every conformant answer is accepted.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.simulator import start_simulator

EXTERNAL_BASE = os.environ.get("FHIR_SMOKE_BASE", "").rstrip("/")
SYSTEM = "urn:fhir-writeback:conformance-smoke"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
LOCATION = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[^/]+))?/?$"
)
TRANSACTION_FAILURES = (400, 404, 409, 412, 422)


@pytest.fixture
def base() -> Iterator[str]:
    if EXTERNAL_BASE:
        yield EXTERNAL_BASE
        return
    sim = start_simulator("generic", seed=None)
    try:
        yield sim.fhir_base
    finally:
        sim.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15, headers={"Accept": "application/fhir+json"}) as client:
        yield client


def tag() -> str:
    return uuid.uuid4().hex[:16]


def token(value: str) -> str:
    return f"{SYSTEM}|{value}"


def patient(value: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": value}],
        "name": [{"family": "Smoke", "given": ["Conformance"]}],
        "gender": "female",
        "birthDate": "1970-01-01",
    } | extra


def weight(subject: str, value: str, kg: float = 70.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": SYSTEM, "value": value}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-11-20T14:00:00Z",
        "valueQuantity": {"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }


def version(etag: str) -> str:
    """`W/"3"` -> "3"."""
    return etag.removeprefix("W/").strip('"')


def located(location: str) -> tuple[str, str, str | None]:
    """(type, id, version or None) from a Location: absolute or relative, with or without _history."""
    match = LOCATION.search(location.split("?")[0])
    assert match, f"not a resource location: {location!r}"
    return match["type"], match["id"], match["version"]


def create(http: httpx.Client, base: str, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = http.post(f"{base}/{resource['resourceType']}", json=resource, headers=FHIR_JSON | headers)
    assert r.status_code == 201, r.text
    return (
        r.json() if r.content else http.get(f"{base}/{'/'.join(located(r.headers['location'])[:2])}").json()
    )


def matches(http: httpx.Client, base: str, resource_type: str, value: str) -> list[dict[str, Any]]:
    r = http.get(f"{base}/{resource_type}", params={"identifier": token(value)})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    found = [
        e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"
    ]
    if "total" in bundle:
        assert bundle["total"] == len(found)
    return found


def outcome(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


# -- the checks ------------------------------------------------------------------------------------


def test_metadata_declares_the_interactions_checked_here(base, http):
    r = http.get(f"{base}/metadata")
    assert r.status_code == 200
    statement = r.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"].startswith("4.0")
    rest = next(rest for rest in statement["rest"] if rest["mode"] == "server")
    assert {"transaction", "batch"} <= {i["code"] for i in rest.get("interaction", [])}
    by_type = {resource["type"]: resource for resource in rest["resource"]}
    for resource_type in ("Patient", "Observation"):
        declared = by_type[resource_type]
        codes = {i["code"] for i in declared["interaction"]}
        assert {
            "create",
            "read",
            "vread",
            "update",
            "patch",
            "delete",
            "search-type",
            "history-instance",
        } <= codes
        assert declared["conditionalCreate"] is True and declared["conditionalUpdate"] is True
        assert declared.get("conditionalDelete") in ("single", "multiple")


def test_create_answers_201_with_location_etag_and_a_server_assigned_id(base, http):
    value = tag()
    r = http.post(f"{base}/Patient", json=patient(value, id="client-chosen"), headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    resource_type, resource_id, at = located(r.headers["location"])
    assert resource_type == "Patient" and resource_id != "client-chosen"  # R4: a POSTed id is ignored
    assert at in (None, "1")
    assert version(r.headers["etag"]) == "1"
    body = r.json()
    assert body["id"] == resource_id and body["meta"]["versionId"] == "1"
    assert body["identifier"] == [{"system": SYSTEM, "value": value}]


def test_read_answers_the_current_version_and_404_for_an_unknown_id(base, http):
    created = create(http, base, patient(tag()))
    r = http.get(f"{base}/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json()["id"] == created["id"] and r.json()["identifier"] == created["identifier"]
    assert version(r.headers["etag"]) == "1"
    missing = http.get(f"{base}/Patient/never-{tag()}")
    assert missing.status_code == 404
    outcome(missing)


def test_update_with_if_match_and_412_for_a_stale_version(base, http):
    created = create(http, base, patient(tag()))
    url = f"{base}/Patient/{created['id']}"
    r = http.put(url, json=created | {"gender": "male"}, headers=FHIR_JSON | {"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert version(r.headers["etag"]) == "2"
    stale = http.put(url, json=created | {"gender": "other"}, headers=FHIR_JSON | {"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    outcome(stale)
    current = http.get(url)
    assert current.json()["gender"] == "male" and version(current.headers["etag"]) == "2"


def test_conditional_create_with_if_none_exist_stores_one_resource(base, http):
    value = tag()
    headers = FHIR_JSON | {"If-None-Exist": f"identifier={token(value)}"}
    first = http.post(f"{base}/Patient", json=patient(value), headers=headers)
    second = http.post(f"{base}/Patient", json=patient(value, gender="male"), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert located(second.headers["location"])[1] == located(first.headers["location"])[1]
    [stored] = matches(http, base, "Patient", value)
    assert stored["gender"] == "female"  # the second POST was ignored


def test_search_by_identifier(base, http):
    wanted, other = tag(), tag()
    created = create(http, base, patient(wanted))
    create(http, base, patient(other))
    assert [r["id"] for r in matches(http, base, "Patient", wanted)] == [created["id"]]
    by_value = http.get(f"{base}/Patient", params={"identifier": wanted}).json()
    assert [e["resource"]["id"] for e in by_value.get("entry", [])] == [created["id"]]
    assert matches(http, base, "Patient", f"absent-{tag()}") == []


def test_history_and_vread(base, http):
    created = create(http, base, patient(tag()))
    url = f"{base}/Patient/{created['id']}"
    assert http.put(url, json=created | {"gender": "male"}, headers=FHIR_JSON).status_code == 200
    history = http.get(f"{url}/_history")
    assert history.status_code == 200
    bundle = history.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]  # newest first
    first = http.get(f"{url}/_history/1")
    assert first.status_code == 200 and version(first.headers["etag"]) == "1"
    assert first.json()["gender"] == "female" and first.json()["meta"]["versionId"] == "1"
    assert http.get(f"{url}/_history/99").status_code == 404


def test_json_patch_with_if_match(base, http):
    """JSON Patch (application/json-patch+json); FHIRPath Patch is not checked."""
    created = create(http, base, patient(tag()))
    url = f"{base}/Patient/{created['id']}"
    ops = [
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "replace", "path": "/gender", "value": "male"},
    ]
    r = http.patch(url, content=json.dumps(ops), headers=JSON_PATCH | {"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert version(r.headers["etag"]) == "2"
    # A patch that would apply, on a stale version: the precondition fails first (RFC 9110 13.2.2).
    applicable = [{"op": "replace", "path": "/gender", "value": "other"}]
    stale = http.patch(url, content=json.dumps(applicable), headers=JSON_PATCH | {"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    failing = [{"op": "test", "path": "/gender", "value": "female"}]
    refused = http.patch(url, content=json.dumps(failing), headers=JSON_PATCH)
    assert refused.status_code in (400, 409, 422)
    current = http.get(url)
    assert current.json()["gender"] == "male" and version(current.headers["etag"]) == "2"


def test_delete_then_read_is_410_and_the_history_keeps_every_version(base, http):
    value = tag()
    created = create(http, base, patient(value))
    url = f"{base}/Patient/{created['id']}"
    deleted = http.delete(url)
    assert deleted.status_code in (200, 202, 204)
    gone = http.get(url)
    assert gone.status_code == 410
    outcome(gone)
    assert matches(http, base, "Patient", value) == []
    history = http.get(f"{url}/_history").json()
    newest = history["entry"][0]
    assert newest["request"]["method"] == "DELETE" and "resource" not in newest  # R4: no resource
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"][1:]] == ["1"]
    assert http.get(f"{url}/_history/1").json()["identifier"] == created["identifier"]
    assert http.delete(url).status_code in (200, 204)  # deleting again has no effect
    revived = http.put(url, json=created | {"gender": "male"}, headers=FHIR_JSON)  # R4: an update revives
    assert revived.status_code in (200, 201)
    again = http.get(url)
    assert again.status_code == 200 and again.json()["gender"] == "male"
    assert int(version(again.headers["etag"])) > int(version(newest["response"]["etag"]))


def test_transaction_resolves_urn_uuid_references_and_conditional_entries(base, http):
    value, first_weight, second_weight, updated = tag(), tag(), tag(), tag()
    patient_urn = urn()
    bundle = transaction(
        {
            "fullUrl": urn(),
            "resource": weight(patient_urn, first_weight),
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "fullUrl": patient_urn,
            "resource": patient(value),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={token(value)}"},
        },
        {
            "resource": patient(updated),
            "request": {"method": "PUT", "url": f"Patient?identifier={token(updated)}"},
        },
    )
    r = http.post(base, json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
    assert [e["response"]["status"].split()[0] for e in answer["entry"]] == ["201", "201", "201"]
    observation_ref, patient_ref, updated_ref = (located(e["response"]["location"]) for e in answer["entry"])
    assert all(version(e["response"]["etag"]) == "1" for e in answer["entry"])
    assert (observation_ref[0], patient_ref[0], updated_ref[0]) == ("Observation", "Patient", "Patient")
    [stored] = matches(http, base, "Observation", first_weight)
    assert stored["subject"]["reference"].endswith(f"Patient/{patient_ref[1]}")
    assert [p["id"] for p in matches(http, base, "Patient", updated)] == [updated_ref[1]]

    # Sent again: the conditional create matches the stored Patient, the conditional update updates.
    bundle["entry"][0]["resource"] = weight(patient_urn, second_weight)
    again = http.post(base, json=bundle, headers=FHIR_JSON)
    assert again.status_code == 200, again.text
    assert [e["response"]["status"].split()[0] for e in again.json()["entry"]] == ["201", "200", "200"]
    assert located(again.json()["entry"][1]["response"]["location"])[1] == patient_ref[1]
    [second] = matches(http, base, "Observation", second_weight)
    assert second["subject"]["reference"].endswith(f"Patient/{patient_ref[1]}")
    assert len(matches(http, base, "Patient", value)) == 1


def test_a_transaction_with_one_failing_entry_stores_nothing(base, http):
    existing = create(http, base, patient(tag()))
    value, observed = tag(), tag()
    patient_urn = urn()
    bundle = transaction(
        {"fullUrl": patient_urn, "resource": patient(value), "request": {"method": "POST", "url": "Patient"}},
        {
            "fullUrl": urn(),
            "resource": weight(patient_urn, observed),
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "resource": existing | {"gender": "male"},
            "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"7"'},
        },
    )
    r = http.post(base, json=bundle, headers=FHIR_JSON)
    assert r.status_code in TRANSACTION_FAILURES, r.text
    outcome(r)
    assert matches(http, base, "Patient", value) == []
    assert matches(http, base, "Observation", observed) == []
    current = http.get(f"{base}/Patient/{existing['id']}")
    assert current.json()["gender"] == "female" and version(current.headers["etag"]) == "1"


def test_a_batch_answers_each_entry_on_its_own(base, http):
    value = tag()
    bundle = transaction(
        {"resource": patient(value), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/never-{tag()}"}},
        kind="batch",
    )
    r = http.post(base, json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["type"] == "batch-response"
    assert [e["response"]["status"].split()[0] for e in answer["entry"]] == ["201", "404"]
    assert len(matches(http, base, "Patient", value)) == 1


def test_conditional_update_creates_updates_honours_if_match_and_refuses_several_matches(base, http):
    value = tag()
    url = f"{base}/Patient?identifier={token(value)}"
    created = http.put(url, json=patient(value), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    resource_id = (
        located(created.headers["location"])[1] if "location" in created.headers else created.json()["id"]
    )
    updated = http.put(url, json=patient(value, gender="male"), headers=FHIR_JSON)
    assert updated.status_code == 200, updated.text
    assert [(p["id"], p["gender"]) for p in matches(http, base, "Patient", value)] == [(resource_id, "male")]
    stale = http.put(url, json=patient(value, gender="other"), headers=FHIR_JSON | {"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert matches(http, base, "Patient", value)[0]["gender"] == "male"
    create(http, base, patient(value))  # a second resource with the same identifier
    several = http.put(url, json=patient(value, gender="unknown"), headers=FHIR_JSON)
    assert several.status_code == 412
    assert {p["gender"] for p in matches(http, base, "Patient", value)} == {"male", "female"}


def test_conditional_delete_of_one_match(base, http):
    value = tag()
    created = create(http, base, patient(value))
    r = http.delete(f"{base}/Patient", params={"identifier": token(value)})
    assert r.status_code in (200, 202, 204)
    assert http.get(f"{base}/Patient/{created['id']}").status_code == 410
    create(http, base, patient(value))
    create(http, base, patient(value))
    several = http.delete(f"{base}/Patient", params={"identifier": token(value)})
    assert several.status_code == 412  # conditionalDelete: single
    assert len(matches(http, base, "Patient", value)) == 2


def test_transaction_patch_entry_applies_a_json_patch(base, http):
    created = create(http, base, patient(tag()))
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(ops).encode()).decode(),
    }
    bundle = transaction(
        {
            "resource": binary,
            "request": {"method": "PATCH", "url": f"Patient/{created['id']}", "ifMatch": 'W/"1"'},
        }
    )
    r = http.post(base, json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"].split()[0] == "200"
    current = http.get(f"{base}/Patient/{created['id']}")
    assert current.json()["gender"] == "male" and version(current.headers["etag"]) == "2"
