"""veradigm profile: read-only FHIR that over-advertises, Unity writes with errors in HTTP 200."""

import base64
import json

import pytest

from adapters.simulator import start_simulator

from .conftest import issue

PROBLEM_XML = (
    "<saveproblemsdatarequest>"
    '<saveproblemsdata fieldid="code" value1="38341003"/>'
    '<saveproblemsdata fieldid="display" value1="Hypertension"/>'
    '<saveproblemsdata fieldid="status" value1="active"/>'
    '<saveproblemsdata fieldid="onset" value1="2026-01-02"/>'
    '<saveproblemsdata fieldid="note" value1="[wb:p-1]"/>'
    "</saveproblemsdatarequest>"
)


class Unity:
    def __init__(self, sim, client):
        self.url = f"{sim.origin}/Unity/UnityService.svc/json"
        self.client = client
        self.token = ""

    def call(self, endpoint, body):
        r = self.client.post(f"{self.url}/{endpoint}", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def login(self, user="writeback", password="secret"):
        self.token = self.call("GetToken", {"Username": user, "Password": password, "Appname": "wb"})
        return self.call(
            "GetUserAuthentication",
            {
                "Action": "GetUserAuthentication",
                "AppUserID": user,
                "Appname": "wb",
                "Token": self.token,
                "Parameter1": password,
            },
        )

    def magic(self, action, patient="pat-1001", **params):
        body = {
            "Action": action,
            "AppUserID": "writeback",
            "Appname": "wb",
            "PatientID": patient,
            "Token": self.token,
        }
        return self.call("MagicJson", body | params)


@pytest.fixture
def unity(veradigm, client):
    session = Unity(veradigm, client)
    assert session.login() == [{"getuserauthenticationinfo": [{"ValidUser": "YES"}]}]
    return session


def test_magic_needs_user_authentication(veradigm, client):
    session = Unity(veradigm, client)
    session.token = session.call("GetToken", {"Username": "writeback", "Password": "secret"})
    assert isinstance(session.token, str) and session.token
    assert session.magic("SaveAllergy", Parameter1="7980") == [
        {"Error": "Magic action requires user authentication"}
    ]
    assert session.call("GetToken", {"Username": "writeback", "Password": "wrong"})[0]["Error"]
    session.token = "not-a-token"
    assert session.magic("SaveAllergy", Parameter1="7980") == [{"Error": "Invalid security token"}]
    assert veradigm.resources("AllergyIntolerance") == []


def test_unity_vitals_land_in_fhir_with_the_marker(veradigm, client, unity):
    vitals = [
        {"code": "29463-7", "value": "81.6", "unit": "kg", "effective": "2026-11-20T14:00:00Z"},
        {"code": "8480-6", "value": "128", "unit": "mm[Hg]", "effective": "2026-11-20T14:00:00Z"},
        {"code": "8462-4", "value": "82", "unit": "mm[Hg]", "effective": "2026-11-20T14:00:00Z"},
    ]
    answer = unity.magic("SaveVitalsData", Parameter1=json.dumps(vitals), Parameter2="[wb:v-1]")
    ids = [item["ID"] for item in answer[0]["savevitalsdatainfo"]]
    assert len(ids) == 2  # weight, and one blood-pressure panel
    observations = {i: client.get(f"{veradigm.fhir_base}/Observation/{i}").json() for i in ids}
    assert {o["code"]["coding"][0]["code"] for o in observations.values()} == {"29463-7", "85354-9"}
    assert all(o["note"] == [{"text": "[wb:v-1]"}] for o in observations.values())
    bad = unity.magic("SaveVitalsData", Parameter1=json.dumps([{"code": "29463-7", "value": "heavy"}]))
    assert "Error" in bad[0]


def test_unity_problem_allergy_note_rx(veradigm, client, unity):
    fhir = veradigm.fhir_base
    problem = unity.magic("SaveProblemsData", Parameter1=PROBLEM_XML)[0]["saveproblemsdatainfo"][0][
        "ProblemID"
    ]
    condition = client.get(f"{fhir}/Condition/{problem}").json()
    assert condition["code"]["coding"][0]["code"] == "38341003" and condition["note"] == [
        {"text": "[wb:p-1]"}
    ]
    assert unity.magic("SaveProblemsData", Parameter1="<oops")[0]["Error"]

    allergy = unity.magic(
        "SaveAllergy",
        Parameter1="7980",
        Parameter2="Penicillin G",
        Parameter3="high",
        Parameter4="Hives",
        Parameter6="[wb:a-1]",
    )
    allergy_id = allergy[0]["saveallergyinfo"][0]["AllergyID"]
    assert client.get(f"{fhir}/AllergyIntolerance/{allergy_id}").json()["note"] == [{"text": "[wb:a-1]"}]

    saved = unity.magic(
        "SaveNote",
        Parameter1="progress",
        Parameter2="Progress note",
        Data="Seen today.",
        Parameter6="[wb:n-1]",
    )
    note = client.get(f"{fhir}/DocumentReference/{saved[0]['savenoteinfo'][0]['NoteID']}").json()
    assert note["description"] == "[wb:n-1]"
    assert base64.b64decode(note["content"][0]["attachment"]["data"]) == b"Seen today."

    rx = unity.magic(
        "SaveRX",
        Parameter1="197361",
        Parameter2="amlodipine 5 MG Oral Tablet",
        Parameter3="1 daily",
        Parameter4="active",
        Parameter6="[wb:m-1]",
    )
    statement = client.get(f"{fhir}/MedicationStatement/{rx[0]['saverxinfo'][0]['RxID']}").json()
    assert statement["dosage"] == [{"text": "1 daily"}]
    found = client.get(f"{fhir}/MedicationStatement", params={"patient": "pat-1001"}).json()
    assert found["total"] == 1


def test_unity_task_status_bumps_the_version(veradigm, client, unity):
    answer = unity.magic("SaveTaskStatus", Parameter1="task-88", Parameter2="completed")
    assert answer == [{"savetaskstatusinfo": [{"TaskID": "task-88"}]}]
    task = veradigm.resources("Task", patient="pat-1001")
    assert {t["id"]: t["status"] for t in task}["task-88"] == "completed"
    assert next(t for t in task if t["id"] == "task-88")["meta"]["versionId"] == "2"
    assert (
        "Error" in unity.magic("SaveTaskStatus", Parameter1="task-1002", Parameter2="completed")[0]
    )  # other patient
    assert "Error" in unity.magic("SaveTaskStatus", Parameter1="task-88", Parameter2="finished")[0]


def test_unity_errors_are_http_200(veradigm, client, unity):
    assert unity.magic("SaveAllergy", patient="nobody", Parameter1="7980")[0]["Error"]
    assert unity.magic("DeleteEverything")[0]["Error"]
    raw = client.post(f"{unity.url}/MagicJson", content=b"{nope")
    assert raw.status_code == 200 and "Error" in raw.json()[0]


def test_fhir_writes_are_405_although_metadata_advertises_them(veradigm, client):
    fhir = veradigm.fhir_base
    assert fhir.endswith("/fhir/CP00101")
    statement = client.get(f"{fhir}/metadata").json()
    condition = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Condition")
    assert {"create", "update"} <= {i["code"] for i in condition["interaction"]}
    assert condition["versioning"] == "no-version"
    r = client.post(f"{fhir}/Condition", json={"resourceType": "Condition"})
    assert r.status_code == 405 and issue(r)["code"] == "not-supported"
    assert (
        client.put(f"{fhir}/Task/task-88", json={"resourceType": "Task", "id": "task-88"}).status_code == 405
    )
    read = client.get(f"{fhir}/Patient/pat-1001")
    assert read.status_code == 200 and "etag" not in read.headers
    assert client.get(f"{veradigm.origin}/fhir/OTHER/Patient/pat-1001").status_code == 404


def test_faults_spare_get_token_but_not_magic(veradigm, client, unity):
    veradigm.set_faults("error_5xx=1.0,seed=1")
    assert isinstance(unity.call("GetToken", {"Username": "writeback", "Password": "secret"}), str)
    failed = client.post(f"{unity.url}/MagicJson", json={"Action": "SaveAllergy", "Token": unity.token})
    assert failed.status_code in (500, 502)
    assert veradigm.resources("AllergyIntolerance") == []


def test_configured_unity_users(client):
    sim = start_simulator("veradigm", seed="none", unity_users={"jmedici": "password01"})
    try:
        session = Unity(sim, client)
        assert session.login("jmedici", "password01") == [
            {"getuserauthenticationinfo": [{"ValidUser": "YES"}]}
        ]
        assert session.call("GetToken", {"Username": "writeback", "Password": "secret"})[0]["Error"]
        refused = session.call(
            "GetUserAuthentication",
            {
                "Action": "GetUserAuthentication",
                "AppUserID": "jmedici",
                "Token": session.token,
                "Parameter1": "no",
            },
        )
        assert refused[0]["getuserauthenticationinfo"][0]["ValidUser"] == "NO"
    finally:
        sim.stop()
