"""Keyset pages of the write list: every write exactly once, newest first, in both directions, with the
filters kept; totals from the running counts (or capped); hostile cursors are the first page."""

import re

import pytest

from tests.console.conftest import HTMX, client_for
from tests.console.test_queries import ledger
from writeback import selectors
from writeback.models import Write
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

ROW = re.compile(r'<a class="row-link" href="/writes/([0-9a-f-]{36})/">')
OLDER = re.compile(r'href="\?([^"]*)"[^>]*rel="next"')
NEWER = re.compile(r'href="\?([^"]*)"[^>]*rel="prev"')


def walk(client, query: str, link: re.Pattern) -> list[list[str]]:
    pages = []
    while True:
        body = client.get(f"/writes/?{query}").content.decode().replace("&amp;", "&")
        pages.append(ROW.findall(body))
        found = link.search(body)
        if not found:
            return pages
        query = found[1]


def test_pages_hold_every_write_once_newest_first_and_walk_back(tenant, admin_user):
    ledger(tenant, 130)
    c = client_for(admin_user)
    pages = walk(c, "", OLDER)
    expected = [str(u) for u in Write.objects.order_by("-id").values_list("uid", flat=True)]
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [u for p in pages for u in p] == expected
    # From the last page back to the first with the "Newer" links.
    body = c.get(f"/writes/?after={Write.objects.order_by('-id')[99].pk}").content.decode()
    assert ROW.findall(body) == expected[100:]
    back = NEWER.search(body)[1].replace("&amp;", "&")
    assert walk(c, back, NEWER) == [expected[50:100], expected[:50]]


def test_filters_are_kept_across_pages_and_totals_come_from_the_counts(tenant, admin_user):
    ledger(tenant, 400)
    c = client_for(admin_user)
    query = "state=failed_terminal&state=pending&resource_type=Observation"
    pages = walk(c, query, OLDER)
    shown = [u for p in pages for u in p]
    expected = Write.objects.filter(state__in=[WriteState.FAILED_TERMINAL, WriteState.PENDING]).order_by(
        "-id"
    )
    assert shown == [str(u) for u in expected.values_list("uid", flat=True)]
    assert len(pages) == 3
    body = c.get(f"/writes/?{query}", **HTMX).content.decode()
    assert f'<h2 id="table-h">{expected.count()} writes</h2>' in body
    total, exact = selectors.write_total(Write.objects.all(), [tenant], {"state": ["pending"], "tenant": ""})
    assert (total, exact) == (Write.objects.filter(state="pending").count(), True)


def test_a_filter_the_counts_cannot_answer_is_counted_up_to_a_cap(tenant, admin_user, monkeypatch):
    ledger(tenant, 60)
    monkeypatch.setattr(selectors, "COUNT_CAP", 25)
    body = client_for(admin_user).get("/writes/?risk=low").content.decode()
    assert '<h2 id="table-h">At least 25 writes</h2>' in body
    assert Write.objects.filter(risk="low").count() > 25
    body = client_for(admin_user).get("/writes/?risk=very_high").content.decode()
    assert f'<h2 id="table-h">{Write.objects.filter(risk="very_high").count()} writes</h2>' in body


@pytest.mark.parametrize(
    "cursor",
    [
        "after=-5",
        "after=abc",
        "after=99999999999999999999999",
        "before=1e9",
        "after=1%3B%20DROP%20TABLE%20x",
        "after=٣",
        "before=",
    ],
)
def test_hostile_cursors_show_the_first_page(tenant, admin_user, cursor):
    ledger(tenant, 60)
    r = client_for(admin_user).get(f"/writes/?{cursor}")
    assert r.status_code == 200
    newest = [str(u) for u in Write.objects.order_by("-id").values_list("uid", flat=True)[:50]]
    assert ROW.findall(r.content.decode()) == newest


def test_another_tenants_writes_never_appear_on_any_page(tenant, other_tenant, admin_user):
    ledger(tenant, 60)
    theirs = ledger(other_tenant, 60)
    pages = walk(client_for(admin_user), f"after={theirs[-1].pk + 1}", OLDER)
    shown = {u for p in pages for u in p}
    assert shown and not shown & {str(w.uid) for w in theirs}
    assert "tenant=" not in "" and selectors.write_total(Write.objects.none(), [tenant], {}) == (
        Write.objects.filter(tenant=tenant).count(),
        True,
    )
