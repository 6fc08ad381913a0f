"""The pre-send re-check read for a whole claimed batch (`services.send_reads`).

One batch holds writes of several patients, tokens and tenants. Each is still decided on its own rows:
a revoked consent, a revoked or narrowed token, a deactivated initiator stops exactly the writes it
covers (held or refused, audited, nothing sent) and lets the rest of the batch go. The reads cost the
same for one write as for a batch.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import api_client_for, make_client_app
from tests.writeback.helpers import event
from tests.writeback.sync.conftest import ours
from writeback.models import ApiToken, AuditEntry, Consent, Write
from writeback.services.consents import consent_create, consent_revoke
from writeback.services.discovery import capabilities_discover
from writeback.services.send_reads import load_send_reads
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.services.tokens import api_token_revoke
from writeback.states import WriteState
from writeback.sync.claim import claim_due
from writeback.sync.worker import SyncWorker

pytestmark = pytest.mark.django_db

PATIENTS = ("pat-1001", "pat-1002", "pat-1003")


def _post(client, patient: str, key: str, tenant: str = "generic-main") -> Write:
    body = event("problem.confirmed", tenant=tenant, key=key)
    body["patient"] = {"id": patient}
    r = client.post("/api/v1/events", body, format="json")
    assert r.status_code == 201, r.json()
    (write,) = Write.objects.filter(uid=r.json()["writes"][0]["id"])
    return write


def _one_batch() -> SyncWorker:
    """Claims every due write in one batch and processes it as the worker loop does."""
    worker = SyncWorker(worker_id="worker:batch", concurrency=16)
    worker.run_once()
    return worker


def _state(write: Write) -> tuple[str, str]:
    write.refresh_from_db()
    return write.state, write.last_error.split(":")[0]


def _sent(sim) -> set[str]:
    return set(ours(sim))


def test_a_revoked_consent_stops_only_its_patients_write_in_the_batch(live, sim, api):
    writes = {p: _post(api, p, f"c-{p}") for p in PATIENTS}
    consent_revoke(consent=Consent.objects.get(tenant=live, patient_ref="pat-1002"), actor=None)
    worker = _one_batch()
    assert worker.stats.processed == 3
    assert _state(writes["pat-1002"]) == (WriteState.FAILED_TERMINAL, "consent-revoked")
    assert _state(writes["pat-1001"])[0] == _state(writes["pat-1003"])[0] == WriteState.COMMITTED
    assert _sent(sim) == {str(writes["pat-1001"].uid), str(writes["pat-1003"].uid)}
    refused = AuditEntry.objects.filter(write_uid=str(writes["pat-1002"].uid), data__to="failed_terminal")
    assert refused.count() == 1


def test_a_patient_with_no_consent_is_refused_even_beside_patients_with_one(live, sim, api):
    writes = {p: _post(api, p, f"n-{p}") for p in ("pat-1001", "pat-1003")}
    # Since intake, the patient's consent was moved to another patient (an edited row).
    Consent.objects.filter(tenant=live, patient_ref="pat-1003").update(patient_ref="pat-9999")
    _one_batch()
    assert _state(writes["pat-1003"]) == (WriteState.FAILED_TERMINAL, "consent-missing")
    assert _sent(sim) == {str(writes["pat-1001"].uid)}


def test_a_revoked_token_holds_only_the_writes_it_submitted(live, sim, api, clinician):
    other_app = make_client_app("ward-board")
    other = api_client_for(other_app, live)
    kept = _post(api, "pat-1001", "t-kept")
    revoked = _post(other, "pat-1002", "t-revoked")
    for token in ApiToken.objects.filter(user=other_app):
        api_token_revoke(token=token)
    _one_batch()
    assert _state(revoked) == (WriteState.HELD_AUTHORIZATION, "token-revoked")
    assert _state(kept)[0] == WriteState.COMMITTED
    assert _sent(sim) == {str(kept.uid)}
    holds = AuditEntry.objects.filter(action="write.held_authorization", write_uid=str(revoked.uid))
    assert holds.count() == 1


def test_a_token_that_stops_naming_one_tenant_holds_that_tenants_writes_only(live, sim, app_user, clinician):
    """One token, two tenants, one batch: the token's standing is read per tenant, not once."""
    second = tenant_create(slug="second", vendor="generic", base_url=sim.fhir_base)
    capabilities_discover(tenant=second)
    tenant_grant(tenant=second, user=clinician)
    tenant_grant(tenant=second, user=app_user)
    for patient in PATIENTS:
        consent_create(tenant=second, patient_ref=patient, actor=None)
    both = api_client_for(app_user, live, second)
    here = _post(both, "pat-1001", "s-here")
    there = _post(both, "pat-1002", "s-there", tenant="second")
    ApiToken.objects.get(name="tests", tenants=second).tenants.set([live])
    _one_batch()
    assert _state(there) == (WriteState.HELD_AUTHORIZATION, "token-lapsed")
    assert _state(here)[0] == WriteState.COMMITTED
    assert _sent(sim) == {str(here.uid)}


def test_a_deactivated_initiator_holds_its_writes_and_not_another_initiators(live, sim, api, clinician2):
    tenant_grant(tenant=live, user=clinician2)
    mine = _post(api, "pat-1001", "i-amy")
    body = event("problem.confirmed", key="i-bob")
    body["patient"] = {"id": "pat-1002"}
    body["initiator"] = {"user": clinician2.username}
    r = api.post("/api/v1/events", body, format="json")
    assert r.status_code == 201, r.json()
    bobs = Write.objects.get(uid=r.json()["writes"][0]["id"])
    clinician2.is_active = False
    clinician2.save(update_fields=["is_active"])
    _one_batch()
    assert _state(bobs) == (WriteState.HELD_AUTHORIZATION, "initiator-lapsed")
    assert _state(mine)[0] == WriteState.COMMITTED
    assert _sent(sim) == {str(mine.uid)}


def _reads_cost(n: int) -> int:
    claimed = claim_due("worker:count", n)
    assert len(claimed) == n
    with CaptureQueriesContext(connection) as ctx:
        load_send_reads(claimed)
    return len(ctx.captured_queries)


def test_the_batch_reads_cost_the_same_for_one_write_as_for_many(live, api):
    """Consent required, events submitted with a token: people, token and consents are one query each
    for the batch, whatever its size."""
    for i, patient in enumerate(PATIENTS):
        _post(api, patient, f"q-{i}")
    one = _reads_cost(1)
    Write.objects.update(lease_owner="", lease_expires_at=None, last_outcome="")
    three = _reads_cost(3)
    assert one == three == 3, connection.queries[-6:]
