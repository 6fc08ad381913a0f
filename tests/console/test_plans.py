"""The plan view (exact requests, predicted outcome), stream parking and shadow divergence."""

import pytest

from tests.console.conftest import HTMX, client_for, failed
from tests.writeback.sync.conftest import drain, post
from writeback.models import Write
from writeback.services.killswitches import kill_switch_engage
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


def test_a_create_plans_a_conditional_create(live, api, admin_user):
    write = post(api, "note.signed", key="plan-1")[0]
    r = client_for(admin_user).post(f"/writes/{write.uid}/plan", **HTMX)
    assert r.status_code == 200
    body = r.content.decode()
    assert "POST" in body and f"{live.base_url}/DocumentReference" in body
    assert "If-None-Exist" in body
    assert "Creates a new DocumentReference" in body


def test_a_stale_base_version_is_predicted_to_conflict(live, api, admin_user, sim):
    write = post(api, "demographics.updated", key="plan-2", base_version="1")[0]
    sim.edit("Patient", "pat-1001", {"gender": "female"})
    body = client_for(admin_user).post(f"/writes/{write.uid}/plan").content.decode()
    assert "Will conflict" in body
    assert "If-Match" in body


def test_a_held_write_says_so(live, api, engineer, admin_user):
    write = post(api, "note.signed", key="plan-3")[0]
    kill_switch_engage(user=engineer, scope="tenant", behaviour="hold", reason="x", tenant=live)
    body = client_for(admin_user).post(f"/writes/{write.uid}/plan", **HTMX).content.decode()
    assert "Held by a kill switch" in body


def test_a_parked_stream_names_the_write_it_waits_behind(make, admin_user):
    first = failed(make("problem.confirmed", key="park-1"))
    second = make("problem.confirmed", key="park-2", note="second visit")
    assert second.stream_key == first.stream_key
    body = client_for(admin_user).get(f"/writes/{second.uid}/").content.decode()
    assert (
        f'Waiting behind write <a class="mono" href="/writes/{first.uid}/">{str(first.uid)[:8]}</a>' in body
    )
    assert "refused by the target" in body


def test_a_write_that_cannot_be_planned_says_why(make, admin_user):
    write = make("note.signed")
    body = client_for(admin_user).post(f"/writes/{write.uid}/plan", **HTMX).content.decode()
    assert "Predicted outcome" in body  # the target is unreachable: the read fails, the page still answers


def test_shadow_divergence_per_tenant_and_field(live, api, admin_user, sim):
    from writeback.models import TenantMode
    from writeback.services.tenants import tenant_set_mode

    tenant_set_mode(tenant=live, mode=TenantMode.SHADOW, actor="tests")
    post(api, "demographics.updated", key="shadow-1")
    drain()
    assert Write.objects.filter(state=WriteState.SHADOWED).exists()
    body = client_for(admin_user).get("/shadow/").content.decode()
    assert "telecom" in body and "Patient" in body
    assert "would change what the EHR holds" in body
