"""The /_sim/* control endpoints and the in-process handle."""

from .conftest import MRN, WB, vital


def test_health_resources_and_requests(generic, client):
    sim = f"{generic.origin}/_sim"
    assert client.get(f"{sim}/health").json() == {"profile": "generic", "resources": 603}
    client.post(f"{generic.fhir_base}/Observation", json=vital(), headers={"Authorization": "Bearer secret"})
    found = client.get(f"{sim}/resources", params={"type": "Observation", "identifier": f"{WB}|w-1"}).json()
    assert [r["identifier"][0]["value"] for r in found["resources"]] == ["w-1"]
    by_patient = client.get(f"{sim}/resources", params={"patient": "pat-1001"}).json()["resources"]
    assert {r["resourceType"] for r in by_patient} == {"Encounter", "Task", "Observation"}
    logged = client.get(f"{sim}/requests", params={"limit": 1}).json()["requests"]
    assert logged[0]["method"] == "POST" and logged[0]["path"] == "/fhir/Observation"
    assert logged[0]["status"] == 201 and "authorization" not in logged[0]["headers"]
    assert '"w-1"' in logged[0]["body"]


def test_seed_edit_and_reset_over_http(generic, client):
    sim = f"{generic.origin}/_sim"
    patient = {"resourceType": "Patient", "id": "p-x", "identifier": [{"system": MRN, "value": "X"}]}
    assert client.post(f"{sim}/seed", json={"resources": [patient]}).json() == {"seeded": 1}
    edited = client.post(
        f"{sim}/edit", json={"type": "Patient", "id": "p-x", "patch": {"gender": "female"}}
    ).json()
    assert edited["gender"] == "female" and edited["meta"]["versionId"] == "2"
    assert client.post(f"{sim}/edit", json={"type": "Patient", "id": "nope", "patch": {}}).status_code == 404
    assert client.post(f"{sim}/reset").json()["resources"] == 0
    assert client.get(f"{generic.fhir_base}/Patient/p-x").status_code == 404
    assert client.post(f"{sim}/reset", json={"seed": "demo"}).json()["resources"] == 603


def test_bad_control_requests(generic, client):
    sim = f"{generic.origin}/_sim"
    assert client.post(f"{sim}/seed", json={"resources": [{"resourceType": "Patient"}]}).status_code == 400
    assert client.post(f"{sim}/seed", content=b"{nope").status_code == 400
    assert client.get(f"{sim}/seed").status_code == 405
    assert client.get(f"{sim}/nothing").status_code == 404


def test_handle_api(generic, client):
    generic.seed([{"resourceType": "Patient", "id": "p-y", "identifier": [{"system": MRN, "value": "Y"}]}])
    assert [p["id"] for p in generic.resources("Patient", identifier=f"{MRN}|Y")] == ["p-y"]
    edited = generic.edit("Patient", "p-y", {"gender": "male"})
    assert edited["meta"]["versionId"] == "2"
    generic.resources("Patient", identifier=f"{MRN}|Y")[0]["gender"] = "mutated"  # copies: the store is safe
    assert client.get(f"{generic.fhir_base}/Patient/p-y").json()["gender"] == "male"
    generic.reset()
    assert generic.resources() == []
    assert generic.requests() == []
