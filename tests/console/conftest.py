"""Console test data: writes made through the API (the real intake), then moved on by the worker's own
Recorder, so every state a page shows is one the system really produces."""

import itertools
import json

import pytest
from django.test import Client

from adapters.base import HttpExchange
from tests.writeback.helpers import consent_for, event
from writeback import diffs
from writeback.models import Conflict, Write
from writeback.services.record import Recorder

RECORDER = Recorder("worker:console-tests")
_keys = itertools.count(1)


@pytest.fixture
def consented(tenant):
    for patient in ("pat-1001", "pat-1002", "pat-1003"):
        consent_for(tenant, patient=patient)
    return tenant


@pytest.fixture
def make(api, consented, clinician):
    """make("note.signed") -> the event's first write; make(..., all_writes=True) -> all of them."""

    def _make(event_type: str = "note.signed", *, key: str | None = None, all_writes: bool = False, **data):
        body = event(event_type, key=key or f"console-{event_type}-{next(_keys)}", **data)
        r = api.post("/api/v1/events", body, format="json")
        assert r.status_code == 201, r.json()
        writes = [
            Write.objects.select_related("tenant", "event").get(uid=w["id"]) for w in r.json()["writes"]
        ]
        return writes if all_writes else writes[0]

    return _make


def exchange(
    method="POST", status=201, body="", url="http://127.0.0.1:9/fhir/DocumentReference"
) -> HttpExchange:
    return HttpExchange(
        method=method, url=url, request_id="req-1", status=status, response_body=body, latency_ms=42.0
    )


def committed(write: Write, resource_id: str = "doc-1", version: str = "1") -> Write:
    RECORDER.committed(
        write,
        exchanges=[exchange()],
        resource_id=resource_id,
        version=version,
        guarantee="ledger",
        counted=True,
    )
    return Write.objects.select_related("tenant", "event").get(pk=write.pk)


def failed(write: Write, message: str = "refused by the target") -> Write:
    outcome = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": "subject is required"}],
        }
    )
    RECORDER.terminal(
        write, exchanges=[exchange(status=422, body=outcome)], message=message, code="rejected-by-target"
    )
    return Write.objects.select_related("tenant", "event").get(pk=write.pk)


def conflicted(write: Write, theirs: dict, theirs_version: str = "4", base: dict | None = None):
    fields = [k for k in write.payload if k not in ("resourceType", "id", "meta")]
    settled = RECORDER.conflict(
        write,
        exchanges=[exchange(method="PATCH", status=412)],
        message="the target holds a newer version",
        base=base,
        theirs=theirs,
        theirs_version=theirs_version,
        diff=diffs.three_way(base, write.payload, theirs, fields),
    )
    conflict = Conflict.objects.get(uid=settled.data["conflict"])
    return Write.objects.select_related("tenant", "event").get(pk=write.pk), conflict


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def as_user():
    return client_for


def refusals(**data) -> list:
    """access.refused audit entries, optionally narrowed by keys of their data (action, rule, channel)."""
    from writeback.models import AuditEntry

    entries = AuditEntry.objects.filter(action="access.refused").order_by("seq")
    return [e for e in entries if all(e.data.get(k) == v for k, v in data.items())]


def audit_actions(**filters) -> list[str]:
    from writeback.models import AuditEntry

    return list(AuditEntry.objects.filter(**filters).order_by("seq").values_list("action", flat=True))


HTMX = {"HTTP_HX_REQUEST": "true"}
