"""Every filter of the write list and every clinical key of its search is answered by an index on
PostgreSQL: EXPLAIN of the very queries the console runs shows no sequential scan of the ledger."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from console.forms import ConsoleWriteFilter
from tests.console.test_queries import ledger
from writeback.models import BusinessEvent, Write
from writeback.selectors import approval_queue, write_search
from writeback.services import metrics

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

FILTERS = {
    # Two indexes lead with the state; the planner may take either.
    "state": ({"state": ["failed_terminal"]}, ("write_state_id_idx", "write_state_next_idx")),
    "tenant": ({"tenant": "generic-main"}, "writeback_write_tenant_id_"),  # the foreign key's index
    "resource_type": ({"resource_type": "Observation"}, "write_type_state_idx"),
    "patient": ({"patient": "pat-3"}, "write_patient_idx"),
    "risk": ({"risk": ["very_high"]}, "write_risk_state_idx"),
    "range": ({"range": "1h"}, "write_created_idx"),
    "since": ({"since": "2026-01-01T00:00:00Z"}, "write_created_idx"),
}


@pytest.fixture
def big_ledger(tenant):
    ledger(tenant, 3000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE writeback_write")
        cursor.execute("ANALYZE writeback_businessevent")
        # Small test tables would be read whole anyway; the question is whether an index *can* answer.
        cursor.execute("SET enable_seqscan = off")
    yield tenant
    with connection.cursor() as cursor:
        cursor.execute("RESET enable_seqscan")


def plan(qs) -> str:
    return qs.order_by().explain()


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_of_the_write_list_uses_its_index(big_ledger, name):
    data, index = FILTERS[name]
    filters = ConsoleWriteFilter(data, queryset=Write.objects.all(), tenants=[big_ledger])
    assert filters.is_valid(), filters.errors
    text = plan(filters.qs.values("pk"))
    assert any(name in text for name in ([index] if isinstance(index, str) else index)), text
    assert "Seq Scan on writeback_write" not in text, text


def test_keyset_page_of_a_rare_state_seeks_by_index(big_ledger):
    rare = Write.objects.filter(pk__in=Write.objects.order_by("id").values("pk")[:60])
    rare.update(state="resolved")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE writeback_write")
    filters = ConsoleWriteFilter({"state": ["resolved"]}, queryset=Write.objects.all(), tenants=[big_ledger])
    assert filters.is_valid()
    last = Write.objects.order_by("-id")[100].pk
    text = filters.qs.filter(pk__lt=last).order_by("-id")[:51].explain()
    assert "write_state_id_idx" in text, text
    # The cursor is a condition of the same index: a page reads only the rows it shows (and a few more).
    assert f"(id < {last})" in text.split("write_state_id_idx", 1)[1], text


@pytest.mark.parametrize(
    ("key", "indexes"),
    [
        ("pat-3", ["write_patient_idx"]),
        ("MRN7", ["event_patient_identifier_idx"]),
        ("q-0-7", ["event_idempotency_key_idx"]),
        ("corr-x", ["write_correlation_idx"]),
        ("Observation/obs-9/_history/2", ["write_target_idx"]),
    ],
)
def test_clinical_key_search_uses_indexes(big_ledger, key, indexes, django_assert_max_num_queries):
    captured = []

    def explain_all(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("SELECT"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + sql, params)
                captured.append("\n".join(row[0] for row in cursor.fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain_all):
        list(write_search(Write.objects.all(), key).values("pk"))
    text = "\n".join(captured)
    for index in indexes:
        assert index in text, text
    assert "Seq Scan on writeback_write" not in text, text
    assert "Seq Scan on writeback_businessevent" not in text, text


def test_the_mrn_search_finds_exactly_that_patients_writes(big_ledger):
    found = set(write_search(Write.objects.all(), "MRN7").values_list("pk", flat=True))
    events = BusinessEvent.objects.filter(patient_identifier__value="MRN7")
    assert found and found == set(Write.objects.filter(event__in=events).values_list("pk", flat=True))


def test_the_overviews_latency_sample_walks_the_newest_attempts_whatever_the_statistics(tenant):
    """The overview's vendor latency reads the window's sends by the attempts' started_at index, each
    attempt's write by its primary key: linear in the window's attempts at worst. A join to the writes
    let a planner with stale statistics (a ledger that grew since its last ANALYZE) loop over every
    write times every attempt: in a 30-minute soak the overview slowed from 41 ms to seconds. Here the
    statistics say the tables are empty."""
    ledger(tenant, 3000)
    with connection.cursor() as cursor:
        for table in ("writeback_write", "writeback_writeattempt"):
            cursor.execute(f"SELECT pg_stat_reset_single_table_counters('{table}'::regclass)")
    since = timezone.now() - timedelta(hours=24)
    text = metrics.latency_sample([tenant.pk], since).explain()
    assert "attempt_started_idx" in text, text
    assert "Join" not in text and "Nested Loop" not in text, text
    assert "Seq Scan on writeback_write " not in text and "writeback_write_tenant_id" not in text, text
    assert len(list(metrics.latency_sample([tenant.pk], since))) > 0


def test_the_approval_queue_reads_its_page_in_order_from_its_index(big_ledger, admin_user):
    """The queue's order (held first, then the oldest) comes from write_decidable_idx: no sort of every
    waiting write per page (at a million writes that sort was most of the page's 190 ms)."""
    waiting = Write.objects.filter(pk__in=Write.objects.order_by("id").values("pk")[:300])
    waiting.update(state="awaiting_approval")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE writeback_write")
    text = approval_queue(admin_user)[:25].explain()
    assert "write_decidable_idx" in text, text
    assert "Sort" not in text, text
