"""Alert routes: the commands, the console page for admins, and the checks a route must pass."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tests.writeback.alert_receiver import Receiver
from writeback.models import Alert, AlertDelivery, AlertRoute, AuditEntry
from writeback.services.alert_delivery import deliver_due, route_add, seal, unseal
from writeback.services.alerts import alert_raise

pytestmark = pytest.mark.django_db

HOSTILE_URLS = [
    "ftp://hooks.example/alerts",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "https://user:pw@hooks.example/alerts",
    "https://hooks.example/alerts?token=abc",
    "https://hooks.example/alerts?api_key=abc",
    "https://hooks.example/a/../b",
    "https://hooks.example/a\\b",
    "https:///nohost",
    "not a url",
    "",
    "https://hooks.example/" + "a" * 600,
]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def audit(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("seq"))


def test_add_list_remove_from_the_command_line(tenant):
    out = run(
        "alert_route_add", "oncall", "--webhook", "https://hooks.example/alerts", "--min-severity", "page"
    )
    route = AlertRoute.objects.get(name="oncall")
    secret = out.strip().splitlines()[-1]
    assert unseal(route.secret_sealed) == secret and len(secret) >= 40
    assert secret not in route.secret_sealed  # stored encrypted, printed once
    assert route.tenant is None and route.min_severity == "page" and not route.escalation
    run("alert_route_add", "mgr", "--email", "duty@hospital.example", "--tenant", tenant.slug, "--escalation")
    listing = run("alert_route_list")
    assert "oncall\thttps://hooks.example/alerts\twebhook · page+ · all tenants" in listing
    assert "mgr\tduty@hospital.example\temail · warning+ · generic-main · escalation" in listing
    assert secret not in listing
    run("alert_route_remove", "oncall")
    assert "oncall" not in run("alert_route_list") and "removed" in run("alert_route_list", "--all")
    [added, _] = audit("alert_route.added")
    assert added.actor == "command:alert_route_add" and secret not in str(added.data)
    assert [e.object_id for e in audit("alert_route.removed")] == ["oncall"]
    # The name is free again once the route is removed.
    run("alert_route_add", "oncall", "--email", "oncall@hospital.example")


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_webhook_url_must_pass_the_outbound_checks(url):
    with pytest.raises(CommandError):
        run("alert_route_add", "bad", "--webhook", url)
    assert not AlertRoute.objects.exists() and not audit("alert_route.added")


@pytest.mark.parametrize(
    "args",
    [
        ["x", "--email", "not-an-address"],
        ["x", "--email", "a@b.example", "--tenant", "no-such-tenant"],
        ["bad name!", "--email", "a@b.example"],
        ["x", "--webhook", "https://h.example/", "--min-severity", "loud"],
    ],
)
def test_bad_arguments_are_command_errors_and_write_nothing(args):
    with pytest.raises((CommandError, SystemExit)):
        run("alert_route_add", *args)
    assert not AlertRoute.objects.exists()


def test_names_are_unique_and_removing_twice_fails(tenant):
    run("alert_route_add", "oncall", "--email", "a@hospital.example")
    with pytest.raises(CommandError, match="exists"):
        run("alert_route_add", "oncall", "--email", "b@hospital.example")
    run("alert_route_remove", "oncall")
    with pytest.raises(CommandError, match="no route"):
        run("alert_route_remove", "oncall")
    assert AlertRoute.objects.get().target == "a@hospital.example"


def test_a_secret_sealed_under_another_key_fails_that_delivery_only(tenant, settings):
    receiver = Receiver()
    try:
        route, _ = route_add(name="hook", actor="command:test", webhook=receiver.url)
        settings.WRITEBACK_ALERT_ROUTE_KEY = "a-rotated-key"
        alert = alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="warning")
        assert deliver_due() == 1
        delivery = AlertDelivery.objects.get(alert=alert)
        assert delivery.status == "pending" and "decrypts" in delivery.last_error
        assert receiver.received == []  # never sent unsigned
        assert unseal(seal("s")) == "s"
    finally:
        receiver.stop()


# -- the console ------------------------------------------------------------------------------------


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


FORM = {
    "name": "ward-hook",
    "kind": "webhook",
    "target": "https://hooks.example/alerts",
    "tenant": "generic-main",
    "min_severity": "warning",
}


def test_an_admin_adds_a_route_and_sees_its_secret_once(admin_user, tenant):
    c = client_for(admin_user)
    r = c.post("/alert-routes/add", FORM)
    assert r.status_code == 201
    route = AlertRoute.objects.get(name="ward-hook")
    secret = unseal(route.secret_sealed)
    assert secret in r.content.decode()
    assert route.tenant == tenant and route.created_by == admin_user
    page = c.get("/alert-routes/").content.decode()
    assert "ward-hook" in page and secret not in page
    [entry] = audit("alert_route.added")
    assert entry.actor == admin_user.username and entry.tenant == tenant.slug


@pytest.mark.parametrize("persona", ["clinician", "engineer", "auditor"])
def test_only_admins_manage_routes(request, persona, tenant):
    c = client_for(request.getfixturevalue(persona))
    assert c.get("/alert-routes/").status_code == 403
    assert c.post("/alert-routes/add", FORM).status_code == 403
    assert not AlertRoute.objects.exists()
    assert [e.data["action"] for e in audit("access.refused")] == ["manage_alert_routes"] * 2


def test_an_admin_cannot_route_another_tenants_alerts(admin_user, other_tenant):
    r = client_for(admin_user).post("/alert-routes/add", {**FORM, "tenant": other_tenant.slug})
    assert r.status_code == 403
    assert not AlertRoute.objects.exists()
    assert audit("access.refused")[-1].data["rule"] == "tenant-forbidden"


@pytest.mark.parametrize("url", HOSTILE_URLS[:6])
def test_a_hostile_url_from_the_console_is_a_form_error(admin_user, tenant, url):
    r = client_for(admin_user).post("/alert-routes/add", {**FORM, "target": url})
    assert r.status_code == 400
    assert 'class="errors"' in r.content.decode()
    assert not AlertRoute.objects.exists()


def test_a_duplicate_name_from_the_console_is_a_form_error(admin_user, tenant):
    c = client_for(admin_user)
    c.post("/alert-routes/add", FORM)
    r = c.post("/alert-routes/add", {**FORM, "kind": "email", "target": "x@hospital.example"})
    assert r.status_code == 400 and "exists" in r.content.decode()
    assert AlertRoute.objects.count() == 1


def test_removing_a_route_from_the_console(admin_user, outsider, tenant):
    route_add(name="ward-hook", actor="command:test", webhook="https://h.example/", tenant=tenant)
    route_add(name="global", actor="command:test", webhook="https://h.example/")
    outsider_admin = outsider
    from django.contrib.auth.models import Group

    outsider_admin.groups.add(Group.objects.get_or_create(name="admin")[0])
    # An admin of another tenant does not find it; routes for all tenants are not removed here.
    assert client_for(outsider_admin).post("/alert-routes/ward-hook/remove").status_code == 404
    assert client_for(admin_user).post("/alert-routes/global/remove").status_code == 404
    assert AlertRoute.objects.filter(removed_at__isnull=True).count() == 2
    assert client_for(admin_user).post("/alert-routes/ward-hook/remove").status_code == 302
    assert AlertRoute.objects.get(name="ward-hook").removed_at is not None
    assert [e.actor for e in audit("alert_route.removed")] == [admin_user.username]


def test_the_alert_page_resolves_and_is_the_tenants_only(clinician, outsider, tenant):
    route_add(name="ward-hook", actor="command:test", webhook="https://h.example/", tenant=tenant)
    alert = alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="warning")
    assert client_for(outsider).get(f"/alerts/{alert.uid}/").status_code == 403
    assert client_for(outsider).post(f"/alerts/{alert.uid}/resolve", {"note": "x"}).status_code == 403
    c = client_for(clinician)
    assert c.post(f"/alerts/{alert.uid}/resolve", {"note": ""}).status_code == 302
    alert.refresh_from_db()
    assert alert.state == "firing"
    page = c.get(f"/alerts/{alert.uid}/").content.decode()
    assert "ward-hook" in page and "not tried yet" in page and "Resolve" in page
    c.post(f"/alerts/{alert.uid}/resolve", {"note": "fixed the feed"})
    alert.refresh_from_db()
    assert alert.state == "resolved" and alert.resolved_by == clinician and alert.acknowledged_by == clinician
    assert list(alert.deliveries.values_list("event", flat=True)) == ["firing", "resolved"]
    assert "Resolved" in c.get("/alerts/?status=resolved").content.decode()
    assert Alert.objects.filter(state="resolved").count() == 1
