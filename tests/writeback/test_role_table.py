"""The one table of who may do what, walked whole.

Every action × every persona (clinician, admin, integration engineer, auditor, client app, an account
with no role, a deactivated account) × the tenant the object belongs to or another one, on the API and,
where the console has the action, in the console. An allowed action happens (the rows it makes are
there); a refused one leaves an `access.refused` audit entry naming the rule, and not one other row
changed: every table this project writes is fingerprinted before and after.

EXPECTED is written out here, not read from the code: the first test holds the code's table to it.
"""

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import api_client_for, make_client_app, make_user
from tests.console.conftest import committed, conflicted, failed
from tests.writeback.helpers import consent_for, event
from writeback.models import (
    Alert,
    AlertRoute,
    Approval,
    AuditEntry,
    BusinessEvent,
    Capability,
    CapabilityChange,
    Compensation,
    Conflict,
    Consent,
    KillSwitch,
    ManualTask,
    Tenant,
    Write,
    WriteAttempt,
    WriteEditor,
)
from writeback.services.permissions import ACTION_ROLES
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

PERSONAS = ["clinician", "admin", "engineer", "auditor", "client_app", "no_role", "inactive"]
ROLE = {
    "clinician": "clinician",
    "admin": "admin",
    "engineer": "integration_engineer",
    "auditor": "auditor",
    "client_app": "client_app",
}
PEOPLE = ["clinician", "admin", "engineer", "auditor"]

# Who may, on the tenant the object belongs to. Nobody may on another tenant's objects, and a
# deactivated account may nothing.
EXPECTED: dict[str, set[str]] = {
    "use_console": {"clinician", "admin", "engineer", "auditor"},
    "view": {"clinician", "admin", "engineer", "auditor", "client_app"},
    "submit_event": {"clinician", "client_app"},
    "submit_on_behalf": set(),  # a client app holding the permission only (test_separation_of_duties)
    "abort_two_phase": {"admin", "engineer", "client_app"},  # a client app: what it submitted itself
    "approve": {"clinician"},
    "reject": {"clinician"},
    "correction": {"clinician"},
    "rollback": {"admin", "engineer"},
    "replay": {"admin", "engineer"},
    "resolve": {"admin"},
    "resolve_conflict": {"clinician", "admin"},
    "confirm_manual_task": {"clinician", "admin", "engineer"},
    "acknowledge_alert": {"clinician", "admin", "engineer"},
    "resolve_alert": {"clinician", "admin", "engineer"},
    "manage_alert_routes": {"admin"},
    "configure_tenant": {"engineer"},
    "kill_switch": {"engineer", "admin"},
    "manage_consent": {"clinician", "admin"},  # and a client app holding the permission
    "view_audit": {"auditor", "admin"},
    "read_ehr": {"clinician", "admin", "engineer"},
}


def test_the_table_is_the_one_the_code_enforces():
    assert set(ACTION_ROLES) == set(EXPECTED)
    for action, personas in EXPECTED.items():
        assert ACTION_ROLES[action] == {ROLE[p] for p in personas}, action


# -- the scene ---------------------------------------------------------------------------------------


@dataclass
class Scene:
    tenant: Tenant
    other: Tenant
    intake: Any  # the API client of the app that posts the scene's events
    persona: str
    where: str  # "own": the persona is a user of `tenant`, where every object is; "other": of `other`
    user: User

    def post(self, client, event_type: str, **data) -> Write:
        r = client.post("/api/v1/events", event(event_type, key=f"scene-{event_type}", **data), format="json")
        assert r.status_code == 201, r.json()
        return Write.objects.select_related("tenant", "event").get(uid=r.json()["writes"][0]["id"])


def _persona_user(persona: str, home: Tenant) -> User:
    name = f"{persona.replace('_', '-')}.{home.slug}"
    if persona == "client_app":
        user = make_client_app(name, on_behalf=False)
    elif persona == "no_role":
        user = make_user(name)
    elif persona == "inactive":
        user = make_user(name, *(ROLE[p] for p in PEOPLE))
    else:
        user = make_user(name, ROLE[persona])
    tenant_grant(tenant=home, user=user)
    if persona == "inactive":
        User.objects.filter(pk=user.pk).update(is_active=False)
        user.refresh_from_db()
    return user


@pytest.fixture
def scene(request, tenant, other_tenant, clinician, api) -> Scene:
    persona, where = request.param
    consent_for(tenant)
    user = _persona_user(persona, tenant if where == "own" else other_tenant)
    return Scene(tenant=tenant, other=other_tenant, intake=api, persona=persona, where=where, user=user)


# What each action needs, made the way the system makes it (intake, then the worker's own Recorder).


def _pending(s: Scene) -> Write:
    return s.post(s.intake, "problem.confirmed")


def _awaiting(s: Scene) -> Write:
    write = s.post(s.intake, "medication.reconciled")
    assert write.state == WriteState.AWAITING_APPROVAL
    return write


def _failed(s: Scene) -> Write:
    return failed(_pending(s))


def _committed(s: Scene) -> Write:
    return committed(s.post(s.intake, "note.signed"), resource_id="doc-7", version="1")


def _referral(s: Scene) -> Write:
    # The client app persona aborts what it sent itself: it posts the referral change in its own name.
    if s.persona == "client_app" and s.where == "own":
        body = event("referral.status_changed", key="scene-referral")
        del body["initiator"]
        r = api_client_for(s.user, s.tenant).post("/api/v1/events", body, format="json")
        assert r.status_code == 201, r.json()
        return Write.objects.select_related("tenant", "event").get(uid=r.json()["writes"][0]["id"])
    return s.post(s.intake, "referral.status_changed")


def _conflict(s: Scene) -> Conflict:
    base = {"resourceType": "Patient", "id": "pat-1001", "telecom": [{"system": "phone", "value": "1"}]}
    theirs = {**base, "telecom": [{"system": "phone", "value": "2"}]}
    _, conflict = conflicted(s.post(s.intake, "demographics.updated"), theirs=theirs, base=base)
    return conflict


def _alert(s: Scene) -> Alert:
    return Alert.objects.get(write=_failed(s))


def _task(s: Scene) -> ManualTask:
    write = _committed(s)
    # No role named on the task: the table alone decides who may confirm it.
    return ManualTask.objects.create(
        tenant=s.tenant, write=write, role="", title="Mark the note entered-in-error", instructions="..."
    )


# -- everything a refusal must leave as it was ---------------------------------------------------------

COUNTED = [
    BusinessEvent,
    Write,
    WriteAttempt,
    WriteEditor,
    Approval,
    Compensation,
    Conflict,
    Consent,
    KillSwitch,
    ManualTask,
    Alert,
    AlertRoute,
    CapabilityChange,
    Capability,
]


def fingerprint() -> dict:
    return {
        "counts": {m.__name__: m.objects.count() for m in COUNTED},
        "writes": sorted(Write.objects.values_list("pk", "state", "payload_hash", "lease_owner")),
        "tenants": sorted(Tenant.objects.values_list("slug", "mode", "consent_required")),
        "alerts": sorted(Alert.objects.values_list("pk", "acknowledged_at", "state")),
        "tasks": sorted(ManualTask.objects.values_list("pk", "status")),
        "conflicts": sorted(Conflict.objects.values_list("pk", "resolved_at")),
        "audit_other_than_refusals": list(
            AuditEntry.objects.exclude(action="access.refused").values_list("seq", flat=True)
        ),
    }


def refusals() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action="access.refused").order_by("seq"))


# -- the cases ---------------------------------------------------------------------------------------


@dataclass
class Case:
    make: Any  # Scene -> the object acted on
    send: Any  # (client, obj, scene) -> response
    done: Any  # (obj, scene, response) -> None: asserts the action happened
    ok: tuple[int, ...] = (200,)
    tenant_scoped: bool = True


def _state(obj, state) -> bool:
    obj.refresh_from_db()
    assert obj.state == state, obj.state
    return True


API: dict[str, Case] = {
    "view": Case(
        _pending,
        lambda c, w, s: c.get(f"/api/v1/writes/{w.uid}"),
        lambda w, s, r: r.json()["id"] == str(w.uid),
    ),
    "submit_event": Case(
        lambda s: None,
        lambda c, _, s: c.post(
            "/api/v1/events",
            {k: v for k, v in event("problem.confirmed", key="mine").items() if k != "initiator"},
            format="json",
        ),
        lambda _, s, r: BusinessEvent.objects.get(idempotency_key="mine").submitter == s.user,
        ok=(201,),
    ),
    "abort_two_phase": Case(
        _referral,
        lambda c, w, s: c.post(f"/api/v1/writes/{w.uid}/abort", {"reason": "our side failed"}, format="json"),
        lambda w, s, r: _state(w, WriteState.RESOLVED),
        ok=(202,),
    ),
    "approve": Case(
        _awaiting,
        lambda c, w, s: c.post(f"/api/v1/writes/{w.uid}/approve", {"rationale": "reviewed"}, format="json"),
        lambda w, s, r: Approval.objects.get(write=w, approver=s.user) and _state(w, WriteState.PENDING),
    ),
    "reject": Case(
        _awaiting,
        lambda c, w, s: c.post(f"/api/v1/writes/{w.uid}/reject", {"rationale": "no"}, format="json"),
        lambda w, s, r: _state(w, WriteState.REJECTED),
    ),
    "replay": Case(
        _failed,
        lambda c, w, s: c.post(f"/api/v1/writes/{w.uid}/replay", {"mode": "resend"}, format="json"),
        lambda w, s, r: _state(w, WriteState.PENDING),
        ok=(202,),
    ),
    "rollback": Case(
        _committed,
        lambda c, w, s: c.post(
            f"/api/v1/writes/{w.uid}/compensate", {"kind": "rollback", "reason": "wrong chart"}, format="json"
        ),
        lambda w, s, r: Compensation.objects.get(original_write=w, kind="rollback", requested_by=s.user),
        ok=(202,),
    ),
    "correction": Case(
        _committed,
        lambda c, w, s: c.post(
            f"/api/v1/writes/{w.uid}/compensate",
            {"kind": "correction", "reason": "wrong title", "data": {"description": "Progress note (fixed)"}},
            format="json",
        ),
        lambda w, s, r: Compensation.objects.get(original_write=w, kind="correction", requested_by=s.user),
        ok=(202,),
    ),
    "resolve": Case(
        _failed,
        lambda c, w, s: c.post(f"/api/v1/writes/{w.uid}/resolve", {"note": "fixed by hand"}, format="json"),
        lambda w, s, r: _state(w, WriteState.RESOLVED),
    ),
    "manage_consent": Case(
        lambda s: None,
        lambda c, _, s: c.post(
            "/api/v1/consents", {"tenant": "generic-main", "patient": "pat-2001"}, format="json"
        ),
        lambda _, s, r: Consent.objects.get(patient_ref="pat-2001", created_by=s.user),
        ok=(201,),
    ),
}

CONSOLE: dict[str, Case] = {
    "view": Case(
        _pending, lambda c, w, s: c.get(f"/writes/{w.uid}/"), lambda w, s, r: str(w.uid) in r.content.decode()
    ),
    "approve": Case(
        _awaiting,
        lambda c, w, s: c.post(f"/writes/{w.uid}/approve", {"rationale": "reviewed"}),
        lambda w, s, r: _state(w, WriteState.PENDING),
        ok=(302,),
    ),
    "reject": Case(
        _awaiting,
        lambda c, w, s: c.post(f"/writes/{w.uid}/reject", {"rationale": "no"}),
        lambda w, s, r: _state(w, WriteState.REJECTED),
        ok=(302,),
    ),
    "replay": Case(
        _failed,
        lambda c, w, s: c.post(f"/writes/{w.uid}/replay/run", {"mode": "resend", "reason": "outage over"}),
        lambda w, s, r: _state(w, WriteState.PENDING),
        ok=(302,),
    ),
    "rollback": Case(
        _committed,
        lambda c, w, s: c.post(
            f"/writes/{w.uid}/rollback/confirm", {"reason": "wrong chart", "confirm": "on"}
        ),
        lambda w, s, r: Compensation.objects.get(original_write=w, kind="rollback"),
        ok=(302,),
    ),
    "correction": Case(
        _committed,
        lambda c, w, s: c.post(
            f"/writes/{w.uid}/correction/confirm",
            {"data": json.dumps({"description": "Fixed"}), "reason": "wrong title", "confirm": "on"},
        ),
        lambda w, s, r: Compensation.objects.get(original_write=w, kind="correction"),
        ok=(302,),
    ),
    "resolve": Case(
        _failed,
        lambda c, w, s: c.post(f"/writes/{w.uid}/resolve", {"note": "fixed by hand"}),
        lambda w, s, r: _state(w, WriteState.RESOLVED),
        ok=(302,),
    ),
    "resolve_conflict": Case(
        _conflict,
        lambda c, k, s: c.post(
            f"/conflicts/{k.uid}/resolve", {f"choice-{i}": "theirs" for i in range(len(k.diff))}
        ),
        lambda k, s, r: Conflict.objects.get(pk=k.pk, resolved_by=s.user),
        ok=(302,),
    ),
    "confirm_manual_task": Case(
        _task,
        lambda c, t, s: c.post(f"/tasks/{t.uid}/confirm", {"note": "done in the EHR"}),
        lambda t, s, r: ManualTask.objects.get(pk=t.pk, status="done", confirmed_by=s.user),
        ok=(302,),
    ),
    "acknowledge_alert": Case(
        _alert,
        lambda c, a, s: c.post(f"/alerts/{a.uid}/acknowledge", {"note": "looked into it"}),
        lambda a, s, r: Alert.objects.get(pk=a.pk, acknowledged_by=s.user),
        ok=(302,),
    ),
    "resolve_alert": Case(
        _alert,
        lambda c, a, s: c.post(f"/alerts/{a.uid}/resolve", {"note": "fixed at the source"}),
        lambda a, s, r: Alert.objects.get(pk=a.pk, state="resolved", resolved_by=s.user),
        ok=(302,),
    ),
    # Routes from the console are for one of the person's tenants.
    "manage_alert_routes": Case(
        lambda s: s.tenant,
        lambda c, t, s: c.post(
            "/alert-routes/add",
            {
                "name": "scene-route",
                "kind": "webhook",
                "target": "https://hooks.example/alerts",
                "tenant": t.slug,
                "min_severity": "warning",
            },
        ),
        lambda t, s, r: AlertRoute.objects.get(name="scene-route", tenant=t),
        ok=(201,),
    ),
    "configure_tenant": Case(
        lambda s: s.tenant,
        lambda c, t, s: c.post(f"/tenants/{t.slug}/mode", {"mode": "paused", "reason": "EHR upgrade"}),
        lambda t, s, r: Tenant.objects.get(pk=t.pk, mode="paused"),
        ok=(302,),
    ),
    "kill_switch": Case(
        lambda s: s.tenant,
        lambda c, t, s: c.post(
            "/kill-switches/engage",
            {"scope": "tenant", "tenant": t.slug, "behaviour": "hold", "reason": "EHR upgrade"},
        ),
        lambda t, s, r: KillSwitch.objects.get(tenant=t, created_by=s.user),
        ok=(302,),
    ),
    # A live read of the chart (the target is unreachable here: the read is audited all the same).
    "read_ehr": Case(
        _awaiting,
        lambda c, w, s: c.post(f"/writes/{w.uid}/chart", HTTP_HX_REQUEST="true"),
        lambda w, s, r: AuditEntry.objects.get(
            action="ehr.read", write_uid=str(w.uid), actor=s.user.username
        ),
    ),
    # Verifying the chain is not about one tenant: the role alone decides.
    "view_audit": Case(
        lambda s: None,
        lambda c, _, s: c.post("/audit/verify"),
        lambda _, s, r: AuditEntry.objects.get(action="audit.chain_verified", actor=s.user.username),
        ok=(302,),
        tenant_scoped=False,
    ),
}


def _expect_allowed(action: str, persona: str, where: str, case: Case, channel: str) -> bool:
    if persona == "inactive" or (where == "other" and case.tenant_scoped):
        return False
    if channel == "console" and persona not in EXPECTED["use_console"]:
        return False
    return persona in EXPECTED[action]


def _walk(scene: Scene, action: str, case: Case, client, channel: str) -> None:
    where = scene.where
    obj = case.make(scene)
    before, refused_before = fingerprint(), len(refusals())
    response = case.send(client, obj, scene)
    if _expect_allowed(action, scene.persona, where, case, channel):
        assert response.status_code in case.ok, (
            response.status_code,
            getattr(response, "content", b"")[:300],
        )
        assert case.done(obj, scene, response)
        assert len(refusals()) == refused_before
        return
    new = refusals()[refused_before:]
    assert len(new) == 1, [(e.data, e.actor) for e in new]
    refusal = new[0]
    assert refusal.actor == scene.user.username and refusal.data["channel"] == channel
    rule = refusal.data["rule"]
    if scene.persona == "inactive":
        assert rule == "account-inactive"
        assert response.status_code == (401 if channel == "api" else 302)
    else:
        assert response.status_code == 403, response.status_code
        holds_role = scene.persona in EXPECTED[action] and scene.persona in EXPECTED["view"]
        if channel == "console":
            holds_role = holds_role and scene.persona in EXPECTED["use_console"]
        # Another tenant's object: refused for the tenant wherever the role would have allowed it.
        assert rule == ("tenant-forbidden" if holds_role else "role-required") or (
            not holds_role and where == "other" and rule == "tenant-forbidden"
        ), (rule, refusal.data)
    assert fingerprint() == before


SCENES = [(p, w) for p in PERSONAS for w in ("own", "other")]
IDS = [f"{p}-{w}" for p, w in SCENES]


@pytest.mark.parametrize("action", sorted(API))
@pytest.mark.parametrize("scene", SCENES, ids=IDS, indirect=True)
def test_api(scene, action):
    home = scene.tenant if scene.where == "own" else scene.other
    if scene.persona == "inactive":
        User.objects.filter(pk=scene.user.pk).update(is_active=True)  # a token is made for an active user
        client = api_client_for(scene.user, home)
        User.objects.filter(pk=scene.user.pk).update(is_active=False)
    else:
        client = api_client_for(scene.user, home)
    _walk(scene, action, API[action], client, "api")


@pytest.mark.parametrize("action", sorted(CONSOLE))
@pytest.mark.parametrize("scene", SCENES, ids=IDS, indirect=True)
def test_console(scene, action):
    client = Client()
    client.force_login(scene.user)  # a deactivated person's session is refused on its next request
    _walk(scene, action, CONSOLE[action], client, "console")
