"""No traceback ever reaches a client; JSON Patch and fault-spec edge cases."""

import pytest

from adapters.simulator.json_patch import PatchError, apply_patch
from adapters.simulator.profiles.generic import GenericProfile

from .conftest import issue


def test_a_handler_crash_is_a_500_operation_outcome(generic, client, monkeypatch):
    def crash(self, req, resource_type, resource_id):
        raise RuntimeError("boom")

    monkeypatch.setattr(GenericProfile, "read", crash)
    r = client.get(f"{generic.fhir_base}/Patient/pat-1001")
    assert r.status_code == 500 and issue(r)["code"] == "exception"
    assert "Traceback" not in r.text and "boom" not in r.text
    assert client.get(f"{generic.origin}/_sim/health").status_code == 200  # still serving


def test_unknown_paths_and_unreadable_requests(generic, client):
    assert client.get(f"{generic.origin}/nothing/here").status_code == 404
    assert client.post(f"{generic.fhir_base}", json={}).status_code == 400  # not a Bundle
    assert client.put(f"{generic.fhir_base}", json={}).status_code == 405
    assert client.get(f"{generic.fhir_base}/Patient", params={"_count": "many"}).status_code == 400
    r = client.post(
        f"{generic.fhir_base}/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 415


def test_chunked_bodies_are_read(generic, client):
    def chunks():
        yield b'{"resourceType": "Patient", '
        yield b'"identifier": [{"system": "urn:x", "value": "chunked"}]}'

    r = client.post(
        f"{generic.fhir_base}/Patient", content=chunks(), headers={"Content-Type": "application/fhir+json"}
    )
    assert r.status_code == 201 and r.json()["identifier"][0]["value"] == "chunked"


def test_json_patch_operations():
    doc = {"resourceType": "Task", "id": "t", "status": "requested", "note": [{"text": "a"}]}
    patched = apply_patch(
        doc,
        [
            {"op": "add", "path": "/note/-", "value": {"text": "b"}},
            {"op": "copy", "from": "/status", "path": "/businessStatus"},
            {"op": "move", "from": "/businessStatus", "path": "/description"},
            {"op": "remove", "path": "/note/0"},
            {"op": "replace", "path": "/status", "value": "completed"},
            {"op": "test", "path": "/note/0/text", "value": "b"},
        ],
    )
    assert patched == {
        "resourceType": "Task",
        "id": "t",
        "status": "completed",
        "note": [{"text": "b"}],
        "description": "requested",
    }
    assert doc["status"] == "requested"  # the input is left alone


@pytest.mark.parametrize(
    "ops",
    [
        {"op": "add"},
        [{"op": "add", "path": "status", "value": 1}],
        [{"op": "remove", "path": "/nope"}],
        [{"op": "add", "path": "/note/5", "value": {}}],
        [{"op": "frobnicate", "path": "/status"}],
        [{"op": "replace", "path": "/status"}],
        [{"op": "move", "from": "/note", "path": "/note/0"}],
    ],
)
def test_bad_json_patches(ops):
    with pytest.raises(PatchError):
        apply_patch({"resourceType": "Task", "id": "t", "status": "x", "note": [{"text": "a"}]}, ops)
