"""generic profile: the spec-correct FHIR R4 REST API over real sockets."""

import socket

import httpx

from .conftest import MRN, WB, issue, vital

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def test_create_answers_201_with_location_etag_and_representation(generic, client):
    r = client.post(f"{generic.fhir_base}/Observation", json=vital(), headers=FHIR_JSON)
    assert r.status_code == 201
    body = r.json()
    assert r.headers["location"] == f"{generic.fhir_base}/Observation/{body['id']}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"].endswith("Z")
    assert body["identifier"] == [{"system": WB, "value": "w-1"}]


def test_prefer_minimal_gives_an_empty_body(generic, client):
    r = client.post(f"{generic.fhir_base}/Observation", json=vital(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b""
    assert r.headers["etag"] == 'W/"1"'


def test_conditional_create_three_times_stores_one_resource(generic, client):
    headers = {"If-None-Exist": f"identifier={WB}|w-42"}
    answers = [
        client.post(f"{generic.fhir_base}/Observation", json=vital(write_id="w-42"), headers=headers)
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 200, 200]
    assert len({a.json()["id"] for a in answers}) == 1
    assert answers[2].headers["location"] == answers[0].headers["location"]
    assert generic.count_by_identifier(WB) == {"w-42": 1}


def test_conditional_create_with_two_matches_is_412(generic, client):
    for _ in range(2):
        client.post(f"{generic.fhir_base}/Observation", json=vital(write_id="dup"))
    r = client.post(
        f"{generic.fhir_base}/Observation",
        json=vital(write_id="dup"),
        headers={"If-None-Exist": f"identifier={WB}|dup"},
    )
    assert r.status_code == 412
    assert issue(r)["code"] == "duplicate"


def test_read_vread_and_history(generic, client):
    created = client.post(f"{generic.fhir_base}/Observation", json=vital()).json()
    url = f"{generic.fhir_base}/Observation/{created['id']}"
    updated = client.put(url, json={**created, "status": "amended"}, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.headers["etag"] == 'W/"2"'
    read = client.get(url)
    assert read.json()["status"] == "amended" and read.headers["etag"] == 'W/"2"'
    assert client.get(f"{url}/_history/1").json()["status"] == "final"
    history = client.get(f"{url}/_history").json()
    assert history["type"] == "history" and history["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_update_with_a_stale_if_match_is_412_and_changes_nothing(generic, client):
    url = f"{generic.fhir_base}/Patient/pat-1001"
    patient = client.get(url).json()
    generic.edit("Patient", "pat-1001", {"gender": "other"})  # a clinician edits it meanwhile
    r = client.put(url, json={**patient, "birthDate": "1950-01-01"}, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert issue(r)["code"] == "conflict"
    assert r.headers["etag"] == 'W/"2"'
    current = client.get(url).json()
    assert current["gender"] == "other" and current["birthDate"] == patient["birthDate"]


def test_put_without_if_match_is_allowed_and_can_create(generic, client):
    url = f"{generic.fhir_base}/Patient/pat-1002"
    patient = client.get(url).json()
    assert client.put(url, json={**patient, "gender": "unknown"}).status_code == 200
    new = {"resourceType": "Patient", "id": "pat-new", "identifier": [{"system": MRN, "value": "X1"}]}
    r = client.put(f"{generic.fhir_base}/Patient/pat-new", json=new)
    assert r.status_code == 201 and r.json()["meta"]["versionId"] == "1"


def test_json_patch_applies_with_if_match(generic, client):
    url = f"{generic.fhir_base}/Task/task-1001"
    ops = [
        {"op": "test", "path": "/status", "value": "requested"},
        {"op": "replace", "path": "/status", "value": "completed"},
    ]
    r = client.patch(
        url, json=ops, headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.headers["etag"] == 'W/"2"'
    stale = client.patch(
        url, json=ops, headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412


def test_bad_json_patch_is_422_and_wrong_content_type_415(generic, client):
    url = f"{generic.fhir_base}/Task/task-1001"
    headers = {"Content-Type": "application/json-patch+json"}
    failed_test = [{"op": "test", "path": "/status", "value": "completed"}]
    assert client.patch(url, json=failed_test, headers=headers).status_code == 422
    missing = [{"op": "replace", "path": "/nope/deeper", "value": 1}]
    assert client.patch(url, json=missing, headers=headers).status_code == 422
    renaming = [{"op": "replace", "path": "/id", "value": "other"}]
    assert client.patch(url, json=renaming, headers=headers).status_code == 422
    assert (
        client.patch(url, json=failed_test, headers={"Content-Type": "application/json"}).status_code == 415
    )
    assert client.get(url).json()["meta"]["versionId"] == "1"


def test_search_by_identifier_patient_and_code(generic, client):
    client.post(f"{generic.fhir_base}/Observation", json=vital(write_id="a"))
    client.post(f"{generic.fhir_base}/Observation", json=vital(write_id="b", code="8867-4"))
    client.post(f"{generic.fhir_base}/Observation", json=vital("pat-1002", write_id="c"))
    search = f"{generic.fhir_base}/Observation"
    by_id = client.get(search, params={"identifier": f"{WB}|a"}).json()
    assert by_id["type"] == "searchset" and by_id["total"] == 1
    assert by_id["entry"][0]["resource"]["identifier"][0]["value"] == "a"
    assert client.get(search, params={"patient": "pat-1001"}).json()["total"] == 2
    assert (
        client.get(search, params={"subject": "Patient/pat-1001", "code": "http://loinc.org|8867-4"}).json()[
            "total"
        ]
        == 1
    )
    assert client.get(search, params={"code": "29463-7"}).json()["total"] == 2
    patients = client.get(f"{generic.fhir_base}/Patient", params={"identifier": f"{MRN}|MRN1005"}).json()
    assert [e["resource"]["id"] for e in patients["entry"]] == ["pat-1005"]


def test_search_pages_with_count_and_next_link(generic, client):
    page = client.get(f"{generic.fhir_base}/Patient", params={"_count": 50}).json()
    assert page["total"] == 200 and len(page["entry"]) == 50
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = client.get(next_url).json()
    assert second["entry"][0]["resource"]["id"] == "pat-1051"


def test_metadata_declares_what_the_profile_serves(generic, client):
    statement = client.get(f"{generic.fhir_base}/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    assert rest["interaction"] == [{"code": "transaction"}, {"code": "batch"}]
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert observation["conditionalCreate"] is True and observation["versioning"] == "versioned"
    assert observation["conditionalUpdate"] is True and observation["conditionalDelete"] == "single"
    assert {i["code"] for i in observation["interaction"]} == {
        "create",
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "search-type",
        "history-instance",
    }


def test_request_errors_are_operation_outcomes(generic, client):
    base = generic.fhir_base
    assert client.get(f"{base}/Spaceship/1").status_code == 404
    assert client.get(f"{base}/Observation/nope").status_code == 404
    malformed = client.post(f"{base}/Observation", content=b"{nope", headers=FHIR_JSON)
    assert malformed.status_code == 400 and issue(malformed)["severity"] == "error"
    wrong_type = client.post(f"{base}/Observation", json={"resourceType": "Condition"})
    assert wrong_type.status_code == 400
    mismatched = client.put(f"{base}/Patient/pat-1001", json={"resourceType": "Patient", "id": "pat-1002"})
    assert mismatched.status_code == 400 and issue(mismatched)["expression"] == ["id"]
    bad_identifier = client.post(
        f"{base}/Observation", json={"resourceType": "Observation", "identifier": "x"}
    )
    assert bad_identifier.status_code == 422
    not_a_method = client.delete(f"{base}/Patient/pat-1001/_history")
    assert not_a_method.status_code == 405 and issue(not_a_method)["code"] == "not-supported"
    assert not_a_method.headers["allow"] == "GET"


def test_keep_alive_answers_go_out_whole_with_nagle_off(generic, monkeypatch):
    """Guards the keep-alive speed without timing it: with Nagle on, or an answer split over several
    sends, each keep-alive request waits ~44 ms for a delayed ACK."""
    from adapters.simulator.server import SimulatorRequestHandler

    assert SimulatorRequestHandler.disable_nagle_algorithm is True
    sent: list[bytes] = []
    real_sendall = socket.socket.sendall

    def recording_sendall(sock, data, *args):
        if bytes(data[:5]) == b"HTTP/":
            sent.append(bytes(data))
        return real_sendall(sock, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", recording_sendall)
    with httpx.Client() as c:
        for _ in range(5):
            assert c.get(f"{generic.fhir_base}/Patient/pat-1001").status_code == 200
    assert len(sent) == 5
    for answer in sent:  # each answer (status line, headers and body) left in a single send
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
        )
        assert len(body) == length > 0


def test_single_identifier_types_are_searchable_and_conditionally_created(generic, client):
    response = {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": WB, "value": "q-1"},
        "status": "completed",
        "subject": {"reference": "Patient/pat-1001"},
    }
    headers = {"If-None-Exist": f"identifier={WB}|q-1"}
    url = f"{generic.fhir_base}/QuestionnaireResponse"
    assert [client.post(url, json=response, headers=headers).status_code for _ in range(2)] == [201, 200]
    assert client.get(url, params={"identifier": f"{WB}|q-1"}).json()["total"] == 1
    assert generic.count_by_identifier(WB) == {"q-1": 1}
    as_list = client.post(url, json=response | {"identifier": [response["identifier"]]})
    assert as_list.status_code == 422
