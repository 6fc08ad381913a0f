"""The write list: every filter and every clinical key finds exactly the right writes (the rows shown are
checked both ways: the expected ones appear, no other does)."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import api_client_for, make_user
from tests.console.conftest import HTMX, RECORDER, client_for, committed, exchange, failed
from tests.writeback.helpers import consent_for, event
from writeback.models import Write
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

ROW_LINK = re.compile(r'<a class="row-link" href="/writes/([0-9a-f-]{36})/">')


def post(client, event_type: str, tenant: str, patient: str, key: str, **data) -> Write:
    body = event(event_type, tenant=tenant, key=key, **data)
    body["patient"] = {
        "id": patient,
        "identifier": {"system": "urn:example:mrn", "value": "MRN" + patient[4:]},
    }
    if tenant == "other":
        body["initiator"] = {"user": "oz.clinician"}
    r = client.post("/api/v1/events", body, format="json")
    assert r.status_code == 201, r.json()
    return Write.objects.select_related("tenant", "event").get(uid=r.json()["writes"][0]["id"])


@pytest.fixture
def ledger(tenant, other_tenant, app_user, admin_user, clinician):
    """Six writes that differ in one way or another, each named for what sets it apart."""
    tenant_grant(tenant=other_tenant, user=make_user("oz.clinician", "clinician"))
    for t, patients in ((tenant, ("pat-1001", "pat-1002", "pat-1003")), (other_tenant, ("pat-1001",))):
        for p in patients:
            consent_for(t, patient=p)
    tenant_grant(tenant=other_tenant, user=admin_user)
    api = api_client_for(app_user, tenant, other_tenant)
    w = {
        "note": committed(
            post(api, "note.signed", "generic-main", "pat-1001", "k-note"), resource_id="doc-A1", version="3"
        ),
        "problem": failed(post(api, "problem.confirmed", "generic-main", "pat-1002", "k-problem")),
        "intake": post(api, "intake.completed", "generic-main", "pat-1003", "k-intake"),
        "allergy": post(api, "allergy.recorded", "other", "pat-1001", "k-allergy"),
        "med": post(api, "medication.reconciled", "generic-main", "pat-1002", "k-med"),
        "retry": post(api, "note.signed", "generic-main", "pat-1003", "k-retry", title="Addendum"),
    }
    RECORDER.retry(w["retry"], exchanges=[exchange(status=503)], message="503 from the EHR", retry_after=None)
    now = timezone.now()
    ages = {
        "note": timedelta(minutes=30),
        "retry": timedelta(minutes=20),
        "problem": timedelta(hours=3),
        "intake": timedelta(days=2),
        "allergy": timedelta(days=10),
        "med": timedelta(days=40),
    }
    for name, age in ages.items():
        Write.objects.filter(pk=w[name].pk).update(created_at=now - age)
    for name in w:
        w[name] = Write.objects.select_related("tenant", "event").get(pk=w[name].pk)
    # What the filters below rely on, as the real intake and recorder produced it.
    assert {n: (x.resource_type, x.risk) for n, x in w.items()} == {
        "note": ("DocumentReference", "medium"),
        "problem": ("Condition", "medium"),
        "intake": ("QuestionnaireResponse", "low"),
        "allergy": ("AllergyIntolerance", "high"),
        "med": ("MedicationStatement", "very_high"),
        "retry": ("DocumentReference", "medium"),
    }
    assert w["note"].state == WriteState.COMMITTED
    assert w["problem"].state == WriteState.FAILED_TERMINAL
    assert w["retry"].state == WriteState.FAILED_RETRYABLE
    assert w["med"].state == w["allergy"].state == WriteState.AWAITING_APPROVAL
    assert w["intake"].state == WriteState.PENDING
    return w


def shown(client, query: str) -> set[str]:
    """The writes in the table for this query (the htmx partial: the table alone)."""
    r = client.get(f"/writes/?{query}", **HTMX)
    assert r.status_code == 200, query
    return set(ROW_LINK.findall(r.content.decode()))


def names(ledger, *which) -> set[str]:
    return {str(ledger[n].uid) for n in which}


ALL = ("note", "problem", "intake", "allergy", "med", "retry")

FILTERS = [
    ("", ALL),
    ("tenant=generic-main", ("note", "problem", "intake", "med", "retry")),
    ("tenant=other", ("allergy",)),
    ("patient=pat-1001", ("note", "allergy")),
    ("patient=pat-1003", ("intake", "retry")),
    ("patient=pat-9999", ()),
    ("resource_type=DocumentReference", ("note", "retry")),
    ("resource_type=MedicationStatement", ("med",)),
    ("state=committed", ("note",)),
    ("state=failed_terminal", ("problem",)),
    ("state=failed_retryable", ("retry",)),
    ("state=failed_terminal&state=failed_retryable", ("problem", "retry")),
    ("state=awaiting_approval", ("med", "allergy")),
    ("state=conflict", ()),
    ("risk=medium", ("note", "problem", "retry")),
    ("risk=high", ("allergy",)),
    ("risk=low&risk=very_high", ("intake", "med")),
    ("range=1h", ("note", "retry")),
    ("range=24h", ("note", "retry", "problem")),
    ("range=7d", ("note", "retry", "problem", "intake")),
    ("range=30d", ("note", "retry", "problem", "intake", "allergy")),
    ("tenant=generic-main&patient=pat-1001", ("note",)),
    ("tenant=generic-main&risk=medium&range=1h", ("note", "retry")),
    ("resource_type=DocumentReference&state=committed", ("note",)),
]


@pytest.mark.parametrize("query,expected", FILTERS, ids=[q or "no-filter" for q, _ in FILTERS])
def test_each_filter_shows_exactly_its_writes(ledger, admin_user, query, expected):
    assert shown(client_for(admin_user), query) == names(ledger, *expected)


def test_an_explicit_time_window(ledger, admin_user):
    now = timezone.localtime()
    since = (now - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")
    until = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    c = client_for(admin_user)
    assert shown(c, f"since={since}&until={until}") == names(ledger, "intake")
    assert shown(c, f"until={until}") == names(ledger, "intake", "allergy", "med")


def test_the_full_page_applies_the_filters_too(ledger, admin_user):
    body = (
        client_for(admin_user).get("/writes/?state=failed_terminal&state=failed_retryable").content.decode()
    )
    assert '<h2 id="table-h">2 writes</h2>' in body
    assert set(ROW_LINK.findall(body)) == names(ledger, "problem", "retry")


def test_people_see_only_their_tenants_rows(ledger, clinician):
    c = client_for(clinician)
    assert shown(c, "") == names(ledger, "note", "problem", "intake", "med", "retry")
    assert shown(c, "q=MRN1001") == names(ledger, "note")
    # Another tenant is not a choice: the filter says so, and its writes stay out of sight.
    body = c.get("/writes/?tenant=other").content.decode()
    assert "Select a valid choice. other is not one of the available choices." in body
    assert str(ledger["allergy"].uid) not in body


def clinical_keys(ledger) -> list[tuple[str, tuple[str, ...]]]:
    note, problem, med, intake = ledger["note"], ledger["problem"], ledger["med"], ledger["intake"]
    return [
        ("MRN1002", ("problem", "med")),  # patient MRN (one patient, two writes)
        ("MRN1001", ("note", "allergy")),  # the same MRN at two tenants
        ("pat-1003", ("intake", "retry")),  # patient id
        ("doc-A1", ("note",)),  # EHR resource id
        ("doc-A1/_history/3", ("note",)),  # EHR resource id and version
        ("doc-A1/_history/2", ()),  # ... not another version
        ("DocumentReference/doc-A1/_history/3", ("note",)),  # as the write page shows it
        ("Condition/doc-A1", ()),  # the type has to match
        (str(problem.event.uid), ("problem",)),  # business event id
        ("k-intake", ("intake",)),  # idempotency key
        ("msg-k-med", ("med",)),  # source message id
        (med.correlation_id, ("med",)),  # correlation id
        (str(note.uid), ("note",)),  # write id
        (str(intake.uid)[:8], ()),  # ids match exactly, not by prefix
        ("nothing-like-this", ()),
    ]


def test_search_by_each_clinical_key(ledger, admin_user):
    c = client_for(admin_user)
    for text, expected in clinical_keys(ledger):
        assert shown(c, f"q={text}") == names(ledger, *expected), text


def test_search_combines_with_filters(ledger, admin_user):
    c = client_for(admin_user)
    assert shown(c, "q=MRN1001&tenant=other") == names(ledger, "allergy")
    assert shown(c, "q=MRN1002&state=failed_terminal") == names(ledger, "problem")


def test_a_bad_filter_value_is_reported_not_ignored(ledger, admin_user):
    body = client_for(admin_user).get("/writes/?state=exploded").content.decode()
    assert (
        'class="form-errors" role="alert"' in body and "exploded is not one of the available choices" in body
    )
