"""Generic compensations: the plan for every type, and performing it with If-Match."""

import base64
import json

import httpx
import pytest
import respx

from adapters.base import Guarantee, Outcome
from adapters.generic.adapter import GenericFhirAdapter
from tests.adapters.intended import write_request
from tests.adapters.support import BASES, SYSTEM, target

BASE = BASES["generic"]
CREATED = {
    "vitals.recorded": "Observation",
    "intake.completed": "QuestionnaireResponse",
    "note.signed": "DocumentReference",
    "medication.reconciled": "MedicationStatement",
}


@pytest.fixture
def adapter():
    a = GenericFhirAdapter(target("generic"))
    yield a
    a.close()


@pytest.mark.parametrize("event_type", list(CREATED))
def test_rollback_marks_status_entered_in_error(adapter, event_type):
    req = write_request(event_type)
    plan = adapter.compensation(req, kind="rollback", resource_id="r1", version="1", data=None)
    (comp,) = plan.requests
    assert comp.operation == "compensate" and comp.target_id == "r1" and comp.base_version == "1"
    assert comp.resource == {"resourceType": CREATED[event_type], "id": "r1", "status": "entered-in-error"}
    assert comp.context["compensation"]["compensates"] == req.write_uid


@pytest.mark.parametrize("event_type", ["problem.confirmed", "allergy.recorded"])
@respx.mock
def test_rollback_of_condition_and_allergy_uses_verification_status(adapter, event_type):
    req = write_request(event_type)
    (comp,) = adapter.compensation(req, kind="rollback", resource_id="r1", version="1", data=None).requests
    assert comp.resource["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    stored = {**req.resource, "id": "r1", "meta": {"versionId": "1"}}
    rtype = comp.resource_type
    respx.get(f"{BASE}/{rtype}/r1").mock(return_value=httpx.Response(200, json=stored))
    put = respx.put(f"{BASE}/{rtype}/r1").mock(
        return_value=httpx.Response(200, json={**stored, "meta": {"versionId": "2"}})
    )
    result = adapter.write(comp)
    body = json.loads(put.calls[0].request.content)
    assert put.calls[0].request.headers["If-Match"] == 'W/"1"'
    assert "clinicalStatus" not in body  # R4: no clinical status on an entered-in-error record
    assert (
        body["code"] == req.resource["code"]
        and body["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    )
    assert result.outcome is Outcome.COMMITTED and result.guarantee is Guarantee.IF_MATCH


@respx.mock
def test_rollback_meets_a_clinician_edit_as_a_conflict(adapter):
    req = write_request("vitals.recorded", 1)
    (comp,) = adapter.compensation(req, kind="rollback", resource_id="r1", version="1", data=None).requests
    edited = {**req.resource, "id": "r1", "meta": {"versionId": "2"}}
    respx.get(f"{BASE}/Observation/r1").mock(return_value=httpx.Response(200, json=edited))
    put = respx.put(f"{BASE}/Observation/r1")
    result = adapter.write(comp)
    assert result.outcome is Outcome.CONFLICT and not put.called


@respx.mock
def test_note_correction_is_a_superseding_document(adapter):
    req = write_request("note.signed")
    plan = adapter.compensation(
        req, kind="correction", resource_id="doc-9", version="1", data={"text": "Corrected."}
    )
    (comp,) = plan.requests
    assert comp.operation == "create"
    assert comp.resource["relatesTo"] == [
        {"code": "replaces", "target": {"reference": "DocumentReference/doc-9"}}
    ]
    assert base64.b64decode(comp.resource["content"][0]["attachment"]["data"]) == b"Corrected."
    post = respx.post(f"{BASE}/DocumentReference").mock(
        return_value=httpx.Response(201, json={"resourceType": "DocumentReference", "id": "doc-10"})
    )
    result = adapter.write(comp)
    sent = json.loads(post.calls[0].request.content)
    assert sent["identifier"] == [{"system": SYSTEM, "value": comp.write_uid}]
    assert post.calls[0].request.headers["If-None-Exist"].endswith(comp.write_uid)
    assert result.outcome is Outcome.COMMITTED and result.resource_id == "doc-10"


def test_correction_of_a_vital_creates_then_retires(adapter):
    req = write_request("vitals.recorded", 1)
    data = {
        "valueQuantity": {"value": 70, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    }
    create, retire = adapter.compensation(
        req, kind="correction", resource_id="r1", version="2", data=data
    ).requests
    assert create.operation == "create" and create.resource["valueQuantity"]["value"] == 70
    assert retire.resource["status"] == "entered-in-error" and retire.base_version == "2"


@respx.mock
def test_patient_rollback_restores_the_base_version_values(adapter):
    req = write_request("demographics.updated", base_version="3")
    req.context.pop("pre_image")  # the ledger keeps none: restore from the version the write replaced
    (comp,) = adapter.compensation(
        req, kind="rollback", resource_id="pat-1001", version="4", data=None
    ).requests
    old = {
        "resourceType": "Patient",
        "id": "pat-1001",
        "meta": {"versionId": "3"},
        "telecom": [{"system": "phone", "value": "1"}],
        "name": [{"family": "R"}],
    }
    now = {
        **old,
        "meta": {"versionId": "4"},
        "telecom": req.resource["telecom"],
        "address": req.resource["address"],
    }
    respx.get(f"{BASE}/Patient/pat-1001/_history/3").mock(return_value=httpx.Response(200, json=old))
    respx.get(f"{BASE}/Patient/pat-1001").mock(return_value=httpx.Response(200, json=now))
    put = respx.put(f"{BASE}/Patient/pat-1001").mock(
        return_value=httpx.Response(200, json={**old, "meta": {"versionId": "5"}})
    )
    result = adapter.write(comp)
    body = json.loads(put.calls[0].request.content)
    assert put.calls[0].request.headers["If-Match"] == 'W/"4"'
    assert body["telecom"] == old["telecom"] and "address" not in body and body["name"] == old["name"]
    assert result.outcome is Outcome.COMMITTED


def test_patient_rollback_with_a_pre_image(adapter):
    req = write_request("demographics.updated", base_version="3")
    (comp,) = adapter.compensation(
        req, kind="rollback", resource_id="pat-1001", version="4", data=None
    ).requests
    assert comp.resource["telecom"] == req.context["pre_image"]["telecom"]
    assert comp.base_version == "4"


def test_task_rollback_restores_the_previous_status(adapter):
    req = write_request("referral.status_changed")
    (comp,) = adapter.compensation(
        req, kind="rollback", resource_id=req.target_id, version="2", data=None
    ).requests
    assert comp.resource == {"resourceType": "Task", "id": req.target_id, "status": "requested"}
    assert comp.base_version == "2"


def test_a_compensation_that_cannot_be_built_says_why(adapter):
    req = write_request("referral.status_changed")
    req.context.pop("from_status")
    plan = adapter.compensation(req, kind="rollback", resource_id=req.target_id, version="2", data=None)
    assert plan.requests == [] and plan.manual is None and "previous status" in plan.description
    plan = adapter.compensation(
        write_request("note.signed"), kind="undo", resource_id="d", version="1", data=None
    )
    assert "unknown compensation kind" in plan.description
