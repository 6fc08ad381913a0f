"""Every console page runs the same number of SQL queries at 300 and at 3,000 writes: nothing a page
shows is computed by reading the ledger row by row (totals come from the running counts)."""

import pytest

from tests.console.conftest import HTMX, client_for
from tests.console.test_queries import count_queries, ledger
from writeback.models import Write
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

LISTS = [
    "/",
    "/writes/",
    "/writes/?state=failed_terminal",
    "/writes/?state=pending&resource_type=Observation&tenant=generic-main",
    "/writes/?risk=very_high&range=24h",
    "/writes/?q=pat-3",
    "/writes/?q=MRN7",
    "/approvals/",
    "/alerts/",
    "/alerts/?status=all&severity=warning",
    "/audit/",
    "/audit/?action=write.&tenant=generic-main",
    "/conflicts/",
    "/tasks/",
    "/tenants/",
    "/tenants/generic-main/",
    "/shadow/",
]


def detail_pages(tenant) -> list[str]:
    failed = Write.objects.filter(tenant=tenant, state=WriteState.FAILED_TERMINAL).order_by("id").first()
    committed = Write.objects.filter(tenant=tenant, state=WriteState.COMMITTED).order_by("id").first()
    return [
        f"/writes/{failed.uid}/",
        f"/writes/{committed.uid}/",
        f"/writes/{failed.uid}/plan",
        f"/writes/{failed.uid}/replay",
        f"/writes/?after={committed.pk + 200}",
    ]


def measure(client, pages: list[str]) -> dict[str, int]:
    out = {url: count_queries(client, url) for url in pages}
    out["/writes/ (htmx)"] = count_queries(client, "/writes/?state=pending", **HTMX)
    out["/ (htmx)"] = count_queries(client, "/", **HTMX)
    return out


def test_every_page_runs_as_many_queries_at_3000_writes_as_at_300(tenant, admin_user, auditor, clinician2):
    admin_user.groups.add(*auditor.groups.all())  # one person who may open every page
    c = client_for(admin_user)
    ledger(tenant, 300, initiator=clinician2)
    pages = LISTS + detail_pages(tenant)
    measure(c, pages)  # warm per-process caches (content types, sessions) so both rounds compare alike
    small = measure(c, pages)
    ledger(tenant, 2700, initiator=clinician2)
    assert Write.objects.count() == 3000
    large = measure(c, pages)
    assert large == small
    print("queries per page with 3,000 writes:", large)
