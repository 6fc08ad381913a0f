"""Who may open what: sign-in, a role for every page, and tenant scope for every object."""

import uuid

import pytest

from tests.conftest import make_user
from tests.console.conftest import client_for, committed, refusals
from writeback.models import Write
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

PAGES = ["/", "/writes/", "/approvals/", "/conflicts/", "/tasks/", "/alerts/", "/tenants/", "/shadow/"]


def write_pages(uid) -> list[str]:
    return [
        f"/writes/{uid}/",
        f"/writes/{uid}/plan",
        f"/writes/{uid}/chart",
        f"/writes/{uid}/rollback",
        f"/writes/{uid}/correction",
        f"/writes/{uid}/replay",
        f"/writes/{uid}/export?format=json",
    ]


def write_actions(uid) -> list[tuple[str, dict]]:
    return [
        (f"/writes/{uid}/approve", {"rationale": "ok"}),
        (f"/writes/{uid}/reject", {"rationale": "no"}),
        (f"/writes/{uid}/rollback/confirm", {"reason": "undo", "confirm": "on"}),
        (
            f"/writes/{uid}/correction/confirm",
            {"reason": "fix", "data": '{"status": "draft"}', "confirm": "on"},
        ),
        (f"/writes/{uid}/replay/run", {"mode": "resend", "reason": "again"}),
        (f"/writes/{uid}/resolve", {"note": "done by hand"}),
    ]


def test_anonymous_people_are_sent_to_sign_in(client, tenant):
    for url in [*PAGES, "/audit/"]:
        r = client.get(url)
        assert r.status_code == 302 and r.url.startswith("/login/"), url


def test_sign_in_page_and_a_wrong_password(client, clinician):
    assert client.get("/login/").status_code == 200
    r = client.post("/login/", {"username": "amy.clinician", "password": "wrong"})
    assert r.status_code == 200 and b"not right" in r.content
    r = client.post("/login/", {"username": "amy.clinician", "password": "pw-for-tests-only"})
    assert r.status_code == 302 and r.url == "/"


def test_the_header_names_the_person_roles_and_tenant_scope(clinician):
    r = client_for(clinician).get("/")
    assert b"amy.clinician" in r.content
    assert b"Clinician" in r.content
    assert b"generic-main" in r.content


def test_a_person_without_a_role_is_refused_every_page_and_it_is_audited(tenant):
    nobody = make_user("no.role")
    c = client_for(nobody)
    for url in [*PAGES, "/audit/"]:
        r = c.get(url)
        assert r.status_code == 403, url
        assert b"needs the role" in r.content
    assert len(refusals(channel="console", rule="role-required")) == len(PAGES) + 1


def test_the_audit_log_is_for_auditors_and_admins(clinician, engineer, auditor, admin_user):
    assert client_for(auditor).get("/audit/").status_code == 200
    assert client_for(admin_user).get("/audit/").status_code == 200
    for person in (clinician, engineer):
        assert client_for(person).get("/audit/").status_code == 403
    assert len(refusals(action="view_audit")) == 2


def test_an_outsider_is_refused_every_write_page_and_action(make, outsider):
    write = committed(make("note.signed"))
    c = client_for(outsider)
    for url in write_pages(write.uid):
        r = c.get(url)
        assert r.status_code == 403, url
        assert b"which you may not act on" in r.content
    for url, data in write_actions(write.uid):
        assert c.post(url, data).status_code == 403, url
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED
    assert not write.compensations.exists()
    refused = refusals(rule="tenant-forbidden", channel="console")
    assert len(refused) == len(write_pages(write.uid)) + len(write_actions(write.uid))
    assert {e.tenant for e in refused} == {"generic-main"}


def test_an_outsider_does_not_see_other_tenants_writes_in_lists(make, outsider):
    write = committed(make("note.signed"))
    c = client_for(outsider)
    assert str(write.uid).encode() not in c.get("/writes/").content
    assert b"No write matches these filters" in c.get(f"/writes/?q={write.uid}").content
    assert b"generic-main" not in c.get("/tenants/").content
    assert c.get("/tenants/generic-main/").status_code == 403


def test_an_unknown_write_is_not_found(clinician):
    c = client_for(clinician)
    assert c.get(f"/writes/{uuid.uuid4()}/").status_code == 404
    assert c.post(f"/writes/{uuid.uuid4()}/approve", {"rationale": "x"}).status_code == 404


def test_actions_only_answer_post(make, admin_user):
    write = committed(make("note.signed"))
    c = client_for(admin_user)
    assert c.get(f"/writes/{write.uid}/resolve").status_code == 405
    assert c.get(f"/writes/{write.uid}/approve").status_code == 405
    assert Write.objects.get(pk=write.pk).state == WriteState.COMMITTED
