"""Two requests with the same idempotency key at the same moment store exactly one event."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.writeback.helpers import consent_for, event
from writeback.models import AuditEntry, BusinessEvent, Write
from writeback.services.audit import verify_chain
from writeback.services.tokens import api_token_create


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_of_the_same_key_store_one_event(tenant, app_user, clinician):
    consent_for(tenant)
    _, key = api_token_create(user=app_user, tenants=[tenant])
    body = event("vitals.recorded", key="same-key")
    barrier = threading.Barrier(4)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        try:
            barrier.wait()
            statuses.append(client.post("/api/v1/events", body, format="json").status_code)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(statuses) == [200, 200, 200, 201]
    assert BusinessEvent.objects.filter(idempotency_key="same-key").count() == 1
    assert Write.objects.count() == 6
    assert AuditEntry.objects.filter(action="event.duplicate_suppressed").count() == 3
    assert verify_chain().ok
