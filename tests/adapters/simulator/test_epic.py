"""epic profile: creates only, with Epic's required context, refusals and error codes."""

import base64

import pytest

from .conftest import MRN, WB, issue, vital

EPIC_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369"


def epic_code(response) -> str:
    coding = issue(response)["details"]["coding"][0]
    assert coding["system"] == EPIC_SYSTEM
    return coding["code"]


def epic_vital(**extra):
    return vital(**({"encounter": {"reference": "Encounter/enc-77"}} | extra))


def problem(**extra):
    resource = {
        "resourceType": "Condition",
        "identifier": [{"system": WB, "value": "p-1"}],
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "verificationStatus": {"coding": [{"code": "provisional"}]},
        "category": [{"coding": [{"code": "problem-list-item"}]}],
        "code": {
            "coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]
        },
        "subject": {"reference": "Patient/pat-1001"},
    }
    return resource | extra


def note(**extra):
    text = base64.b64encode(b"Seen today. [wb:n-1]").decode()
    resource = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": WB, "value": "n-1"}],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
        "subject": {"reference": "Patient/pat-1001"},
        "context": {"encounter": [{"reference": "Encounter/enc-78"}]},
        "content": [{"attachment": {"contentType": "text/plain", "data": text}}],
    }
    return resource | extra


def test_vital_create_answers_like_epic(epic, client):
    r = client.post(f"{epic.fhir_base}/Observation", json=epic_vital())
    assert r.status_code == 201 and r.content == b""
    assert "etag" not in r.headers
    assert r.headers["location"].startswith("Observation/")
    stored = client.get(f"{epic.fhir_base}/{r.headers['location']}").json()
    assert stored["identifier"] == [{"system": WB, "value": "w-1"}]  # kept as the client sent it


def test_prefer_representation_returns_the_resource(epic, client):
    r = client.post(
        f"{epic.fhir_base}/Observation", json=epic_vital(), headers={"Prefer": "return=representation"}
    )
    assert r.status_code == 201 and r.json()["resourceType"] == "Observation"


def test_a_replayed_vital_is_59189_and_if_none_exist_is_ignored(epic, client):
    headers = {"If-None-Exist": f"identifier={WB}|w-1"}
    assert client.post(f"{epic.fhir_base}/Observation", json=epic_vital(), headers=headers).status_code == 201
    replay = client.post(f"{epic.fhir_base}/Observation", json=epic_vital(), headers=headers)
    assert replay.status_code == 400 and epic_code(replay) == "59189"
    assert (
        issue(replay)["expression"] == ["code/instant"] and "already exists" in issue(replay)["diagnostics"]
    )
    later = epic_vital(effectiveDateTime="2026-11-20T15:00:00Z", identifier=[{"system": WB, "value": "w-2"}])
    assert client.post(f"{epic.fhir_base}/Observation", json=later).status_code == 201


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"status": "preliminary"}, "59111", "status"),
        ({"category": [{"coding": [{"code": "laboratory"}]}]}, "59111", "category"),
        ({"code": {"coding": [{"code": "29463-7"}, {"code": "3141-9"}]}}, "59111", "code"),
        ({"encounter": None}, "59108", "encounter"),
        ({"encounter": {"reference": "Encounter/enc-78"}}, "59111", "encounter"),  # finished
        ({"encounter": {"reference": "Encounter/enc-1002"}}, "59111", "encounter"),  # another patient's
        ({"encounter": {"reference": "Encounter/nope"}}, "59111", "encounter"),
        ({"subject": {"reference": "Patient/nope"}}, "59111", "subject"),
    ],
)
def test_vital_refusals(epic, client, change, code, field):
    body = {k: v for k, v in (epic_vital() | change).items() if v is not None}
    r = client.post(f"{epic.fhir_base}/Observation", json=body)
    assert r.status_code == 400, r.text
    assert epic_code(r) == code and issue(r)["expression"] == [field]
    assert epic.resources("Observation") == []


def test_vital_needs_an_encounter_not_in_the_future(epic, client):
    future = {
        "resourceType": "Encounter",
        "id": "enc-future",
        "status": "planned",
        "subject": {"reference": "Patient/pat-1001"},
        "period": {"start": "2099-01-01T09:00:00Z"},
    }
    epic.seed([future])
    r = client.post(
        f"{epic.fhir_base}/Observation", json=epic_vital(encounter={"reference": "Encounter/enc-future"})
    )
    assert r.status_code == 400 and "future" in issue(r)["diagnostics"]


def test_problem_create_and_its_rules(epic, client):
    url = f"{epic.fhir_base}/Condition"
    assert client.post(url, json=problem()).status_code == 201
    assert client.post(url, json=problem()).status_code == 201  # a replay duplicates, as at Epic
    assert len(epic.resources("Condition")) == 2
    confirmed = client.post(url, json=problem(verificationStatus={"coding": [{"code": "confirmed"}]}))
    assert confirmed.status_code == 422 and epic_code(confirmed) == "59012"
    diagnosis = client.post(url, json=problem(category=[{"coding": [{"code": "encounter-diagnosis"}]}]))
    assert diagnosis.status_code == 400 and epic_code(diagnosis) == "59111"
    unnamed = client.post(
        url, json=problem(code={"coding": [{"system": "http://snomed.info/sct", "code": "1"}]})
    )
    assert unnamed.status_code == 400 and epic_code(unnamed) == "59108"


def test_allergy_verification_status(epic, client):
    url = f"{epic.fhir_base}/AllergyIntolerance"
    allergy = {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980"}]},
        "patient": {"reference": "Patient/pat-1001"},
    }
    assert client.post(url, json=allergy).status_code == 201
    unconfirmed = allergy | {"verificationStatus": {"coding": [{"code": "unconfirmed"}]}}
    assert client.post(url, json=unconfirmed).status_code == 201
    confirmed = client.post(url, json=allergy | {"verificationStatus": {"coding": [{"code": "confirmed"}]}})
    assert confirmed.status_code == 422 and epic_code(confirmed) == "59012"


def test_clinical_note_needs_an_encounter_of_the_patient_and_one_text_attachment(epic, client):
    url = f"{epic.fhir_base}/DocumentReference"
    assert client.post(url, json=note()).status_code == 201  # a finished encounter is accepted for notes
    missing = client.post(url, json=note(context={}))
    assert missing.status_code == 400 and epic_code(missing) == "59108"
    other = client.post(url, json=note(context={"encounter": [{"reference": "Encounter/enc-1003"}]}))
    assert other.status_code == 400 and epic_code(other) == "59111"
    pdf = note(content=[{"attachment": {"contentType": "application/pdf", "data": "AAAA"}}])
    assert client.post(url, json=pdf).status_code == 400
    assert client.post(url, json=note(status="superseded")).status_code == 400


def test_patient_create_is_match_or_create(epic, client):
    url = f"{epic.fhir_base}/Patient"
    known = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "MRN1001"}]}
    r = client.post(url, json=known)
    assert r.status_code == 201 and r.headers["location"] == "Patient/pat-1001"
    new = client.post(url, json={"resourceType": "Patient", "identifier": [{"system": MRN, "value": "MRN9"}]})
    assert new.status_code == 201 and new.headers["location"] != "Patient/pat-1001"


def test_refusals_no_update_patch_and_ungranted_apis(epic, client):
    base = epic.fhir_base
    put = client.put(f"{base}/Observation/x", json={"resourceType": "Observation", "id": "x"})
    assert put.status_code == 405 and issue(put)["code"] == "not-supported"
    patch = client.patch(
        f"{base}/Patient/pat-1001", json=[], headers={"Content-Type": "application/json-patch+json"}
    )
    assert patch.status_code == 405
    for resource_type in ("MedicationStatement", "QuestionnaireResponse"):
        r = client.post(f"{base}/{resource_type}", json={"resourceType": resource_type})
        assert r.status_code == 403 and r.content == b""
    task = client.put(f"{base}/Task/task-1001", json={"resourceType": "Task", "id": "task-1001"})
    assert task.status_code == 403 and task.content == b""
    assert client.post(f"{base}/Encounter", json={"resourceType": "Encounter"}).status_code == 405


def test_search_by_patient_and_code_but_not_by_identifier(epic, client):
    client.post(f"{epic.fhir_base}/Observation", json=epic_vital())
    search = f"{epic.fhir_base}/Observation"
    found = client.get(search, params={"patient": "pat-1001", "code": "http://loinc.org|29463-7"}).json()
    assert found["total"] == 1 and found["entry"][0]["resource"]["identifier"][0]["value"] == "w-1"
    assert client.get(search, params={"patient": "pat-1001", "category": "vital-signs"}).json()["total"] == 1
    by_identifier = client.get(search, params={"identifier": f"{WB}|w-1"})
    assert by_identifier.status_code == 400 and issue(by_identifier)["expression"] == ["identifier"]
    assert client.get(search, params={"code": "29463-7"}).status_code == 400  # needs a patient
    assert (
        client.get(f"{epic.fhir_base}/Patient", params={"identifier": f"{MRN}|MRN1001"}).json()["total"] == 1
    )


def test_metadata_is_epics(epic, client):
    statement = client.get(f"{epic.fhir_base}/metadata").json()
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {i["code"] for i in by_type["Observation"]["interaction"]} >= {"create", "read", "search-type"}
    assert all(r["conditionalCreate"] is False for r in by_type.values())
    assert not any(i["code"] in ("patch", "delete") for r in by_type.values() for i in r["interaction"])
