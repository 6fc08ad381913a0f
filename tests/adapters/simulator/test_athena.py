"""athena profile: FHIR reads, v1 writes landing as FHIR resources with the marker, athena's error shapes."""

import json

from .conftest import issue

V1_VITALS = [
    [
        {
            "clinicalelementid": "VITALS.WEIGHT",
            "value": "81.6",
            "readingtaken": "11/20/2026 14:00",
            "note": "[wb:v-1]",
        }
    ],
    [
        {
            "clinicalelementid": "VITALS.BLOODPRESSURE.SYSTOLIC",
            "value": "128",
            "readingtaken": "11/20/2026 14:05",
        },
        {
            "clinicalelementid": "VITALS.BLOODPRESSURE.DIASTOLIC",
            "value": "82",
            "readingtaken": "11/20/2026 14:05",
            "note": "[wb:v-2]",
        },
    ],
]


def v1(sim, path):
    return f"{sim.origin}/v1/195900{path}"


def post_vitals(athena, client, vitals=V1_VITALS, patient="pat-1001", **fields):
    form = {
        "departmentid": "1",
        "source": "DEVICEGENERATED",
        "returnvitalids": "true",
        "vitals": json.dumps(vitals),
    }
    return client.post(v1(athena, f"/chart/{patient}/vitals"), data=form | fields)


def test_vitals_through_v1_are_readable_through_fhir_with_the_marker(athena, client):
    r = post_vitals(athena, client)
    assert r.status_code == 200 and r.json()["success"] is True
    assert len(r.json()["vitalids"]) == 3
    bundle = client.get(f"{athena.fhir_base}/Observation", params={"patient": "pat-1001"}).json()
    by_code = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in bundle["entry"]}
    weight, panel = by_code["29463-7"], by_code["85354-9"]
    assert weight["id"] == f"a-195900.Vitals-{r.json()['vitalids'][0]}"
    assert weight["valueQuantity"]["value"] == 81.6 and weight["valueQuantity"]["code"] == "kg"
    assert weight["effectiveDateTime"] == "2026-11-20T14:00:00Z"
    assert weight["note"] == [{"text": "[wb:v-1]"}]
    assert [c["valueQuantity"]["value"] for c in panel["component"]] == [128.0, 82.0]
    assert panel["note"] == [{"text": "[wb:v-2]"}]
    assert post_vitals(athena, client).json()["success"] is True  # no dedupe: a replay is a second record
    assert len(athena.resources("Observation")) == 4


def test_v1_business_failures_are_2xx_success_false(athena, client):
    bad_date = [
        [{"clinicalelementid": "VITALS.WEIGHT", "value": "80", "readingtaken": "2026-11-20T14:00:00Z"}]
    ]
    for r in (
        post_vitals(athena, client, vitals=bad_date),
        post_vitals(athena, client, patient="nobody"),
        post_vitals(athena, client, vitals=[[{"clinicalelementid": "VITALS.MOOD", "value": "1"}]]),
        client.post(
            v1(athena, "/chart/pat-1001/medications"), data={"departmentid": "1", "medicationid": "999"}
        ),
        client.put(
            v1(athena, "/chart/pat-1001/allergies"),
            data={"departmentid": "1", "allergies": '[{"allergenid": "0"}]'},
        ),
        client.post(
            v1(athena, "/chart/pat-1001/problems"),
            data={"departmentid": "1", "snomedcode": "38341003", "startdate": "2026-01-02"},
        ),
    ):
        assert r.status_code == 200, r.text
        assert r.json()["success"] is False and r.json()["errormessage"]
    assert athena.resources("Observation") == [] and athena.resources("Condition") == []


def test_v1_request_errors_are_4xx_error_detailedmessage(athena, client):
    r = client.post(v1(athena, "/chart/pat-1001/problems"), data={"snomedcode": "38341003"})
    assert r.status_code == 400 and set(r.json()) == {"error", "detailedmessage"}
    assert "departmentid" in r.json()["detailedmessage"]
    assert client.get(f"{athena.origin}/v1/1/ping").status_code == 404  # another practice
    assert client.get(v1(athena, "/ping")).json() == {"pong": "true"}


def test_problem_medication_note_and_allergy_writes(athena, client):
    problem = client.post(
        v1(athena, "/chart/pat-1001/problems"),
        data={
            "departmentid": "1",
            "snomedcode": "38341003",
            "startdate": "01/02/2026",
            "status": "CHRONIC",
            "note": "[wb:p-1]",
        },
    )
    condition = client.get(
        f"{athena.fhir_base}/Condition/a-195900.Problem-{problem.json()['problemid']}"
    ).json()
    assert condition["onsetDateTime"] == "2026-01-02" and condition["note"] == [{"text": "[wb:p-1]"}]

    drug = client.get(v1(athena, "/reference/medications"), params={"searchvalue": "197361"}).json()
    assert drug == [
        {"medicationid": "240010", "medication": "amlodipine 5 MG Oral Tablet", "rxnorm": "197361"}
    ]
    med = client.post(
        v1(athena, "/chart/pat-1001/medications"),
        data={
            "departmentid": "1",
            "medicationid": "240010",
            "startdate": "11/01/2026",
            "unstructuredsig": "1 daily",
            "note": "[wb:m-1]",
        },
    ).json()
    statement = client.get(
        f"{athena.fhir_base}/MedicationStatement/a-195900.MedicationEntry-{med['medicationentryid']}"
    )
    assert statement.json()["medicationCodeableConcept"]["coding"][0]["code"] == "197361"

    doc = client.post(
        v1(athena, "/patients/pat-1001/documents/clinicaldocument"),
        data={
            "departmentid": "1",
            "documentsubclass": "CLINICALDOCUMENT",
            "documenttypeid": "341",
            "attachmentcontents": "Seen today.",
            "internalnote": "[wb:n-1]",
            "autoclose": "true",
        },
    ).json()
    note = client.get(
        f"{athena.fhir_base}/DocumentReference/a-195900.ClinicalDocument-{doc['clinicaldocumentid']}"
    )
    assert note.json()["description"] == "[wb:n-1]" and note.json()["docStatus"] == "final"

    penicillin = client.get(v1(athena, "/reference/allergies"), params={"searchvalue": "penicillin"}).json()
    assert penicillin == [{"allergenid": "10495", "allergenname": "Penicillin G"}]
    for marker, reaction in (("[wb:a-1]", "Hives"), ("[wb:a-2]", "Rash")):
        allergies = [{"allergenid": "10495", "reactions": [{"reactionname": reaction}], "note": marker}]
        r = client.put(
            v1(athena, "/chart/pat-1001/allergies"),
            data={"departmentid": "1", "allergies": json.dumps(allergies)},
        )
        assert r.json() == {"success": True}
    [allergy] = athena.resources("AllergyIntolerance")  # upserted by allergen
    assert allergy["meta"]["versionId"] == "2"
    assert [r["manifestation"][0]["text"] for r in allergy["reaction"]] == ["Hives", "Rash"]
    assert allergy["note"] == [{"text": "[wb:a-1]"}, {"text": "[wb:a-2]"}]


def test_demographics_update_bumps_the_patient_version(athena, client):
    r = client.put(
        v1(athena, "/patients/pat-1002"),
        data={"mobilephone": "555-201-3344", "address1": "9 Elm St", "zip": "62704"},
    )
    assert r.status_code == 200 and r.json() == [{"patientid": "pat-1002"}]
    patient = client.get(f"{athena.fhir_base}/Patient/pat-1002").json()
    assert patient["meta"]["versionId"] == "2"
    assert {"system": "phone", "value": "555-201-3344", "use": "mobile"} in patient["telecom"]
    assert patient["address"][0]["line"] == ["9 Elm St"] and patient["address"][0]["postalCode"] == "62704"
    bad = client.put(v1(athena, "/patients/pat-1002"), data={"zip": "ABCDE"})
    assert bad.status_code == 200 and bad.json()["success"] is False


def test_fhir_is_read_only_except_questionnaire_response(athena, client):
    base = athena.fhir_base
    refused = client.post(f"{base}/Observation", json={"resourceType": "Observation"})
    assert refused.status_code == 405 and issue(refused)["code"] == "not-supported"
    qr = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": "Patient/pat-1001"},
    }
    created = client.post(f"{base}/QuestionnaireResponse", json=qr)
    assert created.status_code == 201 and created.json()["id"].startswith("a-195900.QuestionnaireResponse-")
    assert client.get(f"{base}/Encounter/enc-1001").json()["status"] == "in-progress"
    statement = client.get(f"{base}/metadata").json()
    creates = {r["type"] for r in statement["rest"][0]["resource"] if {"code": "create"} in r["interaction"]}
    assert creates == {"QuestionnaireResponse"}


def test_throttling_is_403_with_quota_headers(athena, client):
    athena.set_faults("rate_limit=1.0")
    r = post_vitals(athena, client)
    assert r.status_code == 403
    assert r.headers["x-athena-ratelimit-remaining-day"] == "0" and r.headers["retry-after"] == "1"
    assert set(r.json()) == {"error", "detailedmessage"}
    assert athena.resources("Observation") == []
