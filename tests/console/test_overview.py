"""The overview dashboard, its polling partial, the metrics endpoints, and time zones."""

import re

import pytest
from django.utils import translation

from tests.conftest import api_client_for
from tests.console.conftest import HTMX, client_for, committed, failed
from tests.writeback.helpers import event
from writeback.models import TenantMode
from writeback.services.metrics import dashboard, percentile
from writeback.services.tenants import tenant_set_mode, tenants_for_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(make, api):
    committed(make("note.signed"))
    failed(make("problem.confirmed"))
    make("medication.reconciled")
    body = event("note.signed", key="dup-1")
    assert api.post("/api/v1/events", body, format="json").status_code == 201
    assert api.post("/api/v1/events", body, format="json").status_code == 200  # a suppressed duplicate


def test_the_dashboard_numbers(ledger, admin_user):
    board = dashboard(tenants_for_user(admin_user))
    assert board.state_totals == {"committed": 1, "failed_terminal": 1, "awaiting_approval": 1, "pending": 1}
    assert board.queue_depth == 1 and board.awaiting_approval == 1 and board.needs_operator == 2
    assert board.sends == 2 and board.retry_rate == 0.0 and board.conflict_rate == 0.0
    assert board.events_received == 5 and board.duplicates_suppressed == 1 and board.duplicate_rate == 0.2
    assert {r["resource_type"]: (r["accepted"], r["rejected"]) for r in board.by_resource_type} == {
        "Condition": (0, 1),
        "DocumentReference": (1, 0),
    }
    assert board.latency[0]["vendor"] == "generic" and board.latency[0]["p50"] == 42.0
    assert board.open_alerts["warning"] == 1
    assert len(board.series) == 24 and board.series[-1].committed == 1 and board.series[-1].events == 4
    assert board.tenants[0].counts["committed"] == 1 and board.by_vendor["generic"]["failed_terminal"] == 1


def test_percentiles_interpolate():
    assert percentile([], 0.5) is None
    assert percentile([10.0], 0.95) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def test_the_overview_page_and_its_polled_partial(ledger, clinician):
    c = client_for(clinician)
    page = c.get("/").content.decode()
    assert "Queue depth" in page and "Writes by state, per tenant" in page and "<svg" in page
    assert 'hx-trigger="every 15s' in page
    partial = c.get("/", **HTMX).content.decode()
    assert partial.lstrip().startswith('<div id="dashboard"')
    assert "<html" not in partial


def test_the_dashboard_shows_tenant_modes(ledger, tenant, admin_user, engineer):
    tenant_set_mode(tenant=tenant, mode=TenantMode.PAUSED, actor=engineer)
    assert b"mode-paused" in client_for(admin_user).get("/").content


def test_metrics_json_for_the_api(ledger, app_user, tenant):
    r = api_client_for(app_user, tenant).get("/api/v1/metrics")
    assert r.status_code == 200
    body = r.json()
    assert body["writes"]["by_state"]["committed"] == 1
    assert body["rates"]["duplicate_suppression_rate"] == 0.2
    assert body["writes"]["by_tenant"][0]["tenant"] == "generic-main"


def test_prometheus_text(ledger, app_user, tenant, client):
    r = api_client_for(app_user, tenant).get("/metrics")
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/plain")
    text = r.content.decode()
    assert 'writeback_open_writes{state="failed_terminal",tenant="generic-main",vendor="generic"} 1.0' in text
    assert 'writeback_queue_depth{tenant="generic-main",vendor="generic"} 1.0' in text
    assert "# TYPE writeback_queue_depth gauge" in text
    assert client.get("/metrics").status_code == 401
    assert client.get("/api/v1/metrics").status_code == 401


def test_metrics_only_cover_the_callers_tenants(ledger, outsider, other_tenant):
    r = api_client_for(outsider, other_tenant).get("/metrics")
    assert r.status_code == 200
    assert "generic-main" not in r.content.decode()
    assert 'writeback_queue_depth{tenant="other",vendor="generic"} 0.0' in r.content.decode()


def test_chart_coordinates_stay_plain_decimals_under_any_locale(ledger, admin_user):
    """SVG reads only '.' as the decimal point: the charts' coordinates are formatted in Python, never
    by the active locale (under German formats a template filter would write 12,5)."""
    with translation.override("de"):
        page = client_for(admin_user).get("/").content.decode()
    svg = "".join(re.findall(r"<svg.*?</svg>", page, flags=re.S))
    values = re.findall(r'\b(?:x|y|x1|x2|y1|y2|cx|cy|width|height)="([^"]*)"', svg)
    assert values and all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in values), values
    points = re.findall(r'points="([^"]*)"', svg)
    assert points and all(re.fullmatch(r"[\d., -]*", p) and ",," not in p for p in points)
