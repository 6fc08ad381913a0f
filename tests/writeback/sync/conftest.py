"""Helpers for worker tests; the simulator fixtures (sim, live) are in tests/conftest.py."""

from django.contrib.auth.models import User
from django.utils import timezone

from tests.conftest import make_user
from tests.writeback.helpers import event
from writeback.canonical import canonicalize
from writeback.fhir_mapping import plan_writes
from writeback.models import BusinessEvent, Write
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState
from writeback.sync.worker import SyncWorker


def post(api, event_type, key=None, **data):
    r = api.post("/api/v1/events", event(event_type, key=key, **data), format="json")
    assert r.status_code == 201, r.json()
    return [Write.objects.get(uid=w["id"]) for w in r.json()["writes"]]


def drain(**kwargs) -> SyncWorker:
    worker = SyncWorker(concurrency=4, **kwargs)
    worker.drain()
    return worker


def ours(sim, system="urn:fhir-writeback:write-id") -> dict[str, int]:
    return sim.count_by_identifier(system)


def bulk_writes(tenant, n: int, patients: int = 50) -> list[Write]:
    """n pending Observation writes over `patients` streams, made directly (intake is tested elsewhere).
    Consent is waived for the tenant: these tests are about throughput, not consent. The writes share
    one event, initiated by a clinician of the tenant; each carries its own patient and no encounter."""
    tenant.consent_required = False
    tenant.save()
    initiator = User.objects.filter(username="bulk.clinician").first() or make_user(
        "bulk.clinician", "clinician"
    )
    tenant_grant(tenant=tenant, user=initiator)
    body = event("vitals.recorded", tenant=tenant.slug, key="bulk")
    body["data"]["measurements"] = body["data"]["measurements"][1:2]
    canonical = canonicalize(body).event
    stored = BusinessEvent.objects.create(
        tenant=tenant,
        type=canonical.type,
        idempotency_key="bulk",
        content_hash="x",
        raw_payload=body,
        canonical_payload=canonical.to_json(),
        patient_ref="pat-1001",
        initiator=initiator,
        initiator_name=initiator.username,
        correlation_id="bulk",
        occurred_at=timezone.now(),
    )
    writes = []
    for i in range(n):
        patient = f"pat-{1001 + i % patients}"
        planned, _ = plan_writes(canonical, identifier_system="urn:fhir-writeback:write-id")
        resource = planned[0].resource
        resource["subject"] = {"reference": f"Patient/{patient}"}
        resource.pop("encounter", None)
        writes.append(
            Write(
                uid=planned[0].uid,
                event=stored,
                tenant=tenant,
                resource_type="Observation",
                operation="create",
                payload=resource,
                payload_hash=f"h{i}",
                state=WriteState.PENDING,
                risk="low",
                patient_ref=patient,
                stream_key=Write.make_stream_key(tenant.pk, patient, "Observation"),
                correlation_id=f"c{i}",
            )
        )
    return Write.objects.bulk_create(writes)
