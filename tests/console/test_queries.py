"""The number of SQL queries per page does not grow with the ledger: measured with 1,000 writes."""

import itertools
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.console.conftest import HTMX, client_for
from writeback.models import Alert, Approval, BusinessEvent, Severity, Write, WriteAttempt
from writeback.services import audit
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

STATES = [
    WriteState.COMMITTED,
    WriteState.PENDING,
    WriteState.FAILED_TERMINAL,
    WriteState.AWAITING_APPROVAL,
    WriteState.CONFLICT,
    WriteState.FAILED_RETRYABLE,
]
_batch = itertools.count()


def ledger(tenant, count: int, initiator=None) -> list[Write]:
    """`count` writes in ten-write events, in varied states, with attempts, approvals, alerts, audit and
    (every fourth) read-back warnings."""
    batch = next(_batch)
    now = timezone.now()
    events = BusinessEvent.objects.bulk_create(
        BusinessEvent(
            tenant=tenant,
            type="vitals.recorded",
            idempotency_key=f"q-{batch}-{i}",
            content_hash="0" * 64,
            raw_payload={},
            canonical_payload={},
            patient_ref=f"pat-{i % 50}",
            patient_identifier={"system": "urn:example:mrn", "value": f"MRN{i % 50}"},
            initiator=initiator,
            initiator_name=initiator.get_username() if initiator else "",
            correlation_id=uuid.uuid4().hex,
            occurred_at=now,
        )
        for i in range(max(count // 10, 1))
    )
    writes = Write.objects.bulk_create(
        Write(
            event=events[i // 10],
            tenant=tenant,
            position=i % 10,
            resource_type="Observation",
            operation="create",
            payload={"resourceType": "Observation", "status": "final", "n": i},
            payload_hash=f"{i:064d}",
            state=STATES[i % len(STATES)],
            risk="low" if i % 3 else "very_high",
            patient_ref=events[i // 10].patient_ref,
            stream_key=f"{tenant.pk}:{events[i // 10].patient_ref}:Observation:{batch}:{i}",
            correlation_id=events[i // 10].correlation_id,
            last_error="terminal: 422 Unprocessable" if i % len(STATES) == 2 else "",
            warnings=["the EHR stored 1 field(s) differently from what we sent"] if i % 4 == 0 else [],
            attempts=1,
        )
        for i in range(count)
    )
    WriteAttempt.objects.bulk_create(
        WriteAttempt(
            write=w,
            number=1,
            method="POST",
            url="http://ehr/Observation",
            response_status=201,
            latency_ms=float(i % 90),
            outcome="committed",
        )
        for i, w in enumerate(writes)
    )
    Alert.objects.bulk_create(
        Alert(
            tenant=tenant,
            write=w,
            resource_type="Observation",
            severity=Severity.WARNING,
            code="x",
            message="failed",
            holds_queue=i % 2 == 0,
        )
        for i, w in enumerate(writes)
        if w.state == WriteState.FAILED_TERMINAL
    )
    audit.record_many(
        audit.draft(
            "write.transition",
            actor="worker:q",
            tenant=tenant.slug,
            write_uid=str(w.uid),
            data={"from": "pending", "to": w.state},
        )
        for w in writes
    )
    return writes


def count_queries(client, url: str, **extra) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, **extra)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


PAGES = [
    "/writes/",
    "/writes/?state=failed_terminal&risk=very_high&range=24h",
    "/writes/?tenant=generic-main&resource_type=Observation&page=3",
    "/writes/?q=pat-3",
    "/approvals/",
    "/alerts/",
    "/alerts/?status=all",
    "/audit/",
    "/audit/?action=write.&tenant=generic-main",
    "/conflicts/",
    "/",
]


def test_list_pages_use_a_constant_number_of_queries(tenant, admin_user, auditor, clinician2):
    admin_user.groups.add(*auditor.groups.all())  # admins also read the audit log; one person sees all pages
    c = client_for(admin_user)
    ledger(tenant, 60, initiator=clinician2)
    for url in PAGES:  # warm per-process caches (content types) so both rounds measure the same thing
        count_queries(c, url)
    small = {url: count_queries(c, url) for url in PAGES}
    ledger(tenant, 1000, initiator=clinician2)
    assert Write.objects.count() == 1060
    large = {url: count_queries(c, url) for url in PAGES}
    assert large == small
    assert max(large.values()) <= 16, large
    assert (
        count_queries(c, "/writes/", **HTMX) == large["/writes/"] - 1
    )  # the partial skips the form's tenant list? no header
    print("queries per page with 1,060 writes:", large)


def test_the_write_list_with_1000_writes(tenant, admin_user, django_assert_max_num_queries):
    ledger(tenant, 1000)
    c = client_for(admin_user)
    with django_assert_max_num_queries(12):
        r = c.get("/writes/")
    assert r.status_code == 200 and b"1000 writes" in r.content
    with django_assert_max_num_queries(12):
        assert c.get("/writes/?page=20", **HTMX).status_code == 200


def test_the_write_page_does_not_grow_with_its_history(tenant, admin_user, clinician2):
    c = client_for(admin_user)
    short = ledger(tenant, 10, initiator=clinician2)[2]
    long = ledger(tenant, 10, initiator=clinician2)[2]
    WriteAttempt.objects.bulk_create(
        WriteAttempt(write=long, number=n, method="PUT", url="u", outcome="retryable") for n in range(2, 40)
    )
    Approval.objects.bulk_create(
        Approval(
            write=long,
            approver=clinician2,
            decision="approved",
            rationale="r",
            payload_hash="h",
            expires_at=timezone.now(),
        )
        for _ in range(5)
    )
    assert count_queries(c, f"/writes/{long.uid}/") == count_queries(c, f"/writes/{short.uid}/")
