"""Per-tenant alert thresholds from the command line: shown with their origin, set checked and audited."""

import io

import pytest
from django.core.management import CommandError, call_command

from writeback.models import AuditEntry, Tenant
from writeback.services.alerts import escalation_minutes
from writeback.services.thresholds import DEFAULTS, tenant_thresholds

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("alert_thresholds", *args, stdout=out)
    return out.getvalue()


def test_shows_defaults_then_the_tenants_overrides(tenant):
    shown = run(tenant.slug)
    assert f"conflict_rate\t{DEFAULTS['conflict_rate']}\t(default)" in shown
    assert "escalation_minutes\t15\t(default)" in shown
    shown = run(tenant.slug, "--set", "conflict_rate=0.1", "--set", "escalation_minutes=5")
    assert "conflict_rate\t0.1\t(tenant)" in shown and "escalation_minutes\t5\t(tenant)" in shown
    tenant.refresh_from_db()
    assert tenant_thresholds(tenant)["conflict_rate"] == 0.1 and escalation_minutes(tenant) == 5
    [entry] = AuditEntry.objects.filter(action="tenant.alert_thresholds_changed")
    assert entry.data == {"before": {}, "after": {"conflict_rate": 0.1, "escalation_minutes": 5}}
    run(tenant.slug, "--set", "conflict_rate=default")
    tenant.refresh_from_db()
    assert tenant.settings["alerts"] == {"escalation_minutes": 5}


def test_other_settings_of_the_tenant_are_kept(tenant):
    tenant.settings = {"practice_id": "195900", "alerts": {"queue_depth": 50}}
    tenant.save()
    run(tenant.slug, "--set", "retry_rate=0.3")
    tenant.refresh_from_db()
    assert tenant.settings == {"practice_id": "195900", "alerts": {"queue_depth": 50, "retry_rate": 0.3}}


@pytest.mark.parametrize(
    "item",
    [
        "conflict_rate=1.5",
        "conflict_rate=-0.1",
        "conflict_rate=nan",
        "queue_depth=inf",
        "queue_depth=12.5",
        "queue_depth=lots",
        "escalation_minutes=0",
        "window_minutes=0",
        "no_such_threshold=1",
        "conflict_rate",
        "=3",
    ],
)
def test_bad_values_are_command_errors_and_change_nothing(tenant, item):
    with pytest.raises(CommandError):
        run(tenant.slug, "--set", "queue_depth=5", "--set", item)
    assert Tenant.objects.get(pk=tenant.pk).settings.get("alerts") is None
    assert not AuditEntry.objects.filter(action="tenant.alert_thresholds_changed").exists()


def test_an_unknown_tenant_is_a_command_error():
    with pytest.raises(CommandError, match="no tenant"):
        run("nope")
