"""Hostile bodies to every POST endpoint of the API and the console: never a 5xx, never a row written.

The endpoints come from the URL configuration, so a new one is covered without touching this file.
Each is called by an authorised user of every relevant role, on objects the action could really act on
(an awaiting write to approve, a committed one to compensate, a failed one to replay), with a body that
is valid but for one hostile change: deep nesting, a body over the endpoint's limit, NUL and other
control characters, lone surrogates, a wrong JSON type in a field, bytes that are not UTF-8, JSON that is
not an object, NaN. The valid bodies themselves are accepted (the last test), so every refusal here is
the hostile change's doing. Audit entries for refusals are allowed; anything else in the database is not.

Runs on SQLite and PostgreSQL (the PostgreSQL pass is the one that matters: it cannot store a NUL).
"""

import json
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.conftest import api_client_for
from tests.console.conftest import committed, conflicted, failed
from tests.writeback.helpers import consent_for, event
from writeback.api import body as gate
from writeback.models import (
    Alert,
    Approval,
    BulkOperation,
    BusinessEvent,
    CapabilityChange,
    Compensation,
    Conflict,
    Consent,
    KillSwitch,
    ManualTask,
    Tenant,
    Write,
    WriteAttempt,
)
from writeback.services.permissions import grant_action_permission
from writeback.states import WriteState

HOSTILE = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
UID = "<uuid:uid>"
CONSENT_ARTIFACT = {
    "resourceType": "Consent",
    "status": "active",
    "scope": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]
    },
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": "Patient/pat-2001"},
    "policyRule": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
    },
}


# -- the endpoints, from the URL configuration -----------------------------------------------------------


@dataclass
class Endpoint:
    name: str
    route: str  # e.g. "api/v1/writes/<uuid:uid>/approve"
    api: bool
    url: str = ""
    kind: str = ""  # the gate's body kind

    @property
    def tail(self) -> str:
        return self.route.split(">")[-1].strip("/")


def _routes(patterns=None, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        route = str(p.pattern)
        if isinstance(p, URLResolver):
            if route.startswith("admin/"):
                continue  # Django's admin: behind the same gate, but not ours to enumerate
            out.extend(_routes(p.url_patterns, prefix + route))
        elif isinstance(p, URLPattern) and p.name:
            out.append((p.name, prefix + route))
    return out


def endpoints() -> list[Endpoint]:
    found = []
    for name, route in _routes():
        view = resolve("/" + route.replace(UID, str(uuid.uuid4())).replace("<slug:slug>", "x")).func
        view_class = getattr(view, "cls", None) or getattr(view, "view_class", None) or type(view)
        found.append(Endpoint(name=name, route=route, api=gate.is_api(view_class)))
    return found


def test_the_enumeration_finds_the_write_actions_and_the_console():
    names = {e.name for e in endpoints()}
    for expected in (
        "api-events",
        "api-consents",
        "api-consent-revoke",
        "api-event-replay",
        *(f"api-write-{a}" for a in ("approve", "reject", "replay", "compensate", "resolve", "abort")),
        "console-write-approve",
        "console-write-correction-confirm",
        "console-write-replay",
        "console-killswitch-engage",
        "console-login",
    ):
        assert expected in names
    api = {e.name for e in endpoints() if e.api}
    assert api == {n for n in names if n.startswith("api-")} | {"metrics"}


# -- a scene with something to act on ----------------------------------------------------------------------


@dataclass
class Scene:
    api_clients: dict[str, APIClient]
    console_clients: dict[str, Client]
    objects: dict[str, str]
    endpoints: list[Endpoint] = field(default_factory=list)

    def fingerprint(self) -> tuple:
        counted = (Write, WriteAttempt, BusinessEvent, Consent, Approval, Compensation, ManualTask, Conflict)
        counted += (KillSwitch, CapabilityChange, BulkOperation)
        return (
            tuple(m.objects.count() for m in counted),
            tuple(Write.objects.order_by("pk").values_list("pk", "state", "payload_hash")),
            tuple(Consent.objects.order_by("pk").values_list("pk", "status")),
            tuple(Tenant.objects.order_by("pk").values_list("pk", "mode")),
            tuple(Alert.objects.order_by("pk").values_list("pk", "acknowledged_at")),
        )


def _uid_for(endpoint: Endpoint, objects: dict[str, str]) -> str:
    route, tail = endpoint.route, endpoint.tail
    if "consents/" in route:
        return objects["consent"]
    if "events/" in route:
        return objects["event"]
    if "alerts/" in route:
        return objects["alert"]
    if "conflicts/" in route:
        return objects["conflict"]
    if "writes/" in route:
        if tail in ("approve", "reject"):
            return objects["awaiting"]
        if tail.startswith(("replay", "resolve", "abort")):
            return objects["failed"]
        return objects["committed"]
    return str(uuid.uuid4())  # nothing of that kind here: the gate answers before any lookup


@pytest.fixture
def scene(api, app_user, tenant, clinician, clinician2, admin_user, engineer, auditor) -> Scene:
    for patient in ("pat-1001", "pat-1002", "pat-1003"):
        consent_for(tenant, patient=patient)

    def first_write(event_type: str, key: str) -> Write:
        r = api.post("/api/v1/events", event(event_type, key=key), format="json")
        assert r.status_code == 201, r.json()
        return Write.objects.select_related("tenant", "event").get(uid=r.json()["writes"][0]["id"])

    awaiting = first_write("allergy.recorded", "scene-allergy")
    assert awaiting.state == WriteState.AWAITING_APPROVAL
    done = committed(first_write("problem.confirmed", "scene-problem"), resource_id="cond-1")
    broken = failed(first_write("note.signed", "scene-note"))
    patient = {"resourceType": "Patient", "id": "pat-1001", "telecom": []}
    _, conflict = conflicted(
        first_write("demographics.updated", "scene-patient"), theirs=patient, base=patient
    )
    grant_action_permission(app_user, "manage_consent")
    objects = {
        "awaiting": str(awaiting.uid),
        "committed": str(done.uid),
        "failed": str(broken.uid),
        "event": str(broken.event.uid),
        "consent": str(Consent.objects.first().uid),
        "alert": str(Alert.objects.get(write=broken).uid),
        "conflict": str(conflict.uid),
    }
    # The events name amy.clinician as initiator: bob is the clinician who may approve them (four eyes).
    roles = {"clinician": clinician2, "admin": admin_user, "engineer": engineer, "auditor": auditor}
    console_clients = {}
    for role, user in roles.items():
        console_clients[role] = Client()
        console_clients[role].force_login(user)
    api_clients = {role: api_client_for(user, tenant) for role, user in roles.items() if role != "auditor"}
    api_clients["consent-app"] = api
    found = []
    for e in endpoints():
        e.url = "/" + e.route.replace(UID, _uid_for(e, objects)).replace("<slug:slug>", tenant.slug)
        e.kind = gate.body_kind(resolve(e.url).func.cls) if e.api else gate.FORMS
        found.append(e)
    return Scene(api_clients, console_clients, objects, found)


# -- valid bodies, one per endpoint ------------------------------------------------------------------------


def api_body(e: Endpoint, n: int = 0) -> dict[str, Any]:
    if e.name == "api-events":
        return event("problem.confirmed", key=f"hostile-{n}")
    if e.name == "api-consents":
        return {
            "tenant": "generic-main",
            "patient": "pat-2001",
            "scope": {"resource_types": ["Observation"], "actions": ["create"]},
            "period": {"start": "2026-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
            "artifact": CONSENT_ARTIFACT,
        }
    return {
        "approve": {"rationale": "checked the dose"},
        "reject": {"rationale": "wrong patient"},
        "replay": {"mode": "resend", "reason": "target is back", "shadow": False},
        "compensate": {"kind": "rollback", "reason": "sent to the wrong chart"},
        "resolve": {"note": "fixed in the EHR by hand"},
        "abort": {"reason": "our side failed"},
        "revoke": {"reason": "patient asked"},
    }.get(e.tail, {"note": "a body for a read-only endpoint"})


def form_body(e: Endpoint, scene: Scene) -> dict[str, Any]:
    tail = e.tail
    if tail in ("approve", "reject"):
        return {"rationale": "checked the dose"}
    if tail.startswith("rollback"):
        return {"reason": "sent to the wrong chart", "confirm": "on"}
    if e.route.startswith("conflicts/") and tail in ("preview", "resolve"):
        return {"choice-0": "value", "value-0": json.dumps([{"system": "phone", "value": "+15551234"}])}
    if tail.startswith("correction"):
        return {"data": json.dumps({"note": [{"text": "corrected"}]}), "reason": "typo", "confirm": "on"}
    if tail == "replay/run":
        payload = Write.objects.get(uid=scene.objects["failed"]).payload
        return {"mode": "edit", "payload": json.dumps(payload), "reason": "fixed", "scope": "write"}
    return {
        "console-login": {"username": "amy.clinician", "password": "pw-for-tests-only"},
        "console-set-timezone": {"tz": "Europe/Paris", "next": "/"},
        "console-detect-timezone": {"tz": "Europe/Paris"},
        "console-tenant-mode": {"mode": "paused", "reason": "maintenance"},
        "console-capability-request": {
            "resource_type": "Observation",
            "operation": "create",
            "allowed": "false",
            "note": "narrow it",
        },
        "console-killswitch-engage": {
            "scope": "tenant",
            "tenant": "generic-main",
            "behaviour": "hold",
            "reason": "incident",
        },
        "console-bulk-start": {"uid": [scene.objects["failed"]], "reason": "retry", "rate": "2"},
        "console-bulk-preview": {"uid": [scene.objects["failed"]]},
    }.get(e.name, {"note": "seen and handled"})


# -- hostile changes ---------------------------------------------------------------------------------------

# C0 controls a value may not hold (tab, LF and CR are text), and the UTF-16 surrogates JSON can smuggle.
BAD_IN_VALUE = [chr(c) for c in range(0x20) if c not in (9, 10, 13)] + ["\ud800", "\udfff"]
BAD_IN_NAME = [chr(c) for c in range(0x20)] + ["\udc00"]
NOT_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\x80"]
WRONG = {
    str: [7, 1.5, True, [], {}, ["a"]],
    bool: ["true", 1, 0, [], {}, "yes"],
    int: ["1", True, [], {}],
    float: ["1.5", True, [], {}],
    list: ["a", 3, True, {}],
    dict: ["a", 3, False, [], [{}]],
}


def _paths(value, prefix=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k), v
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i), v
            yield from _paths(v, (*prefix, i))


def _set(doc, path, new):
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new


def _nested(depth: int, leaf: Any = 1) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"a": leaf}
    return leaf


def hostile_json(draw, base: dict, limit: int) -> tuple[bytes, str]:
    """One hostile change to a valid JSON body: (raw bytes, content type)."""
    doc = json.loads(json.dumps(base))
    paths = list(_paths(doc))
    strings = [p for p, v in paths if isinstance(v, str)]
    how = draw(
        st.sampled_from(["deep", "deep-text", "huge", "char", "name", "type", "utf8", "not-object", "nan"])
    )
    if how == "deep":
        path = draw(st.sampled_from([p for p, _ in paths] or [("x",)]))
        _set(doc, path, _nested(draw(st.integers(django_settings.WRITEBACK_MAX_JSON_DEPTH, 3000))))
    elif how == "deep-text":
        depth = draw(st.sampled_from([100, 5000, 100_000]))
        return ("[" * depth + "]" * depth).encode(), "application/json"
    elif how == "huge":
        size = draw(st.sampled_from([limit + 1, limit * 2, 8 * 1024 * 1024]))
        doc["padding"] = "x" * size
    elif how == "char":
        path = draw(st.sampled_from(strings))
        old = _get(doc, path)
        at = draw(st.integers(0, len(old)))
        _set(doc, path, old[:at] + draw(st.sampled_from(BAD_IN_VALUE)) + old[at:])
    elif how == "name":
        doc[draw(st.sampled_from(["", "note", "x"])) + draw(st.sampled_from(BAD_IN_NAME))] = "value"
    elif how == "type":
        path, old = draw(st.sampled_from(paths))
        wrong = [w for w in WRONG[type(old)] if type(w) is not type(old)]
        _set(doc, path, draw(st.sampled_from(wrong)))
    elif how == "not-object":
        return json.dumps(
            draw(st.sampled_from([[doc], "text", 3, None, True, []]))
        ).encode(), "application/json"
    raw = json.dumps(doc).encode()
    if how == "utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(NOT_UTF8)) + raw[at:]
    elif how == "nan":
        raw = (
            raw[:-1]
            + b', "n": '
            + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
            + b"}"
        )
    return raw, draw(st.sampled_from(["application/json", "application/fhir+json"]))


def _get(doc, path):
    for step in path:
        doc = doc[step]
    return doc


def hostile_form(draw, base: dict, scene: Scene) -> tuple[bytes, str]:
    """One hostile change to a valid console form: (raw bytes, content type)."""
    fields = {k: (v if isinstance(v, list) else [v]) for k, v in base.items()}
    how = draw(st.sampled_from(["char", "name", "huge", "long", "utf8", "type", "multipart", "json"]))
    name = draw(st.sampled_from(sorted(fields)))
    if how == "char":
        old = fields[name][0]
        at = draw(st.integers(0, len(old)))
        fields[name] = [old[:at] + draw(st.sampled_from(BAD_IN_VALUE[:-2])) + old[at:]]
    elif how == "name":
        fields[name + draw(st.sampled_from(BAD_IN_NAME[:-1]))] = ["x"]
    elif how == "huge":
        fields[name] = ["x" * draw(st.sampled_from([gate.max_bytes(gate.FORMS) + 1, 8 * 1024 * 1024]))]
    elif how == "long":
        fields[name] = ["y" * (django_settings.WRITEBACK_MAX_STRING_CHARS + 1)]
    elif how == "multipart":
        fields[name] = [fields[name][0] + draw(st.sampled_from(BAD_IN_VALUE[:-2]))]
        return encode_multipart(BOUNDARY, fields), MULTIPART_CONTENT
    elif how == "type":
        text = json.dumps(base).encode()
        return text, draw(st.sampled_from(["application/json", "text/plain", "application/xml"]))
    elif how == "json":
        json_fields = [f for f in ("data", "payload", "value-0") if f in fields]
        if not json_fields:
            fields[name] = [fields[name][0] + "\x00"]
        else:
            target = draw(st.sampled_from(json_fields))
            broken = [
                json.dumps(_nested(draw(st.integers(django_settings.WRITEBACK_MAX_JSON_DEPTH, 5000)))),
                "[" * 100_000,
                '{"note": [{"text": "a\\u0000b"}]}',
                '{"note": [{"text": "\\ud800"}]}',
                '{"valueQuantity": {"value": NaN}}',
            ]
            if target != "value-0":  # a conflict's typed value may be any JSON; a payload is an object
                broken += ["[1, 2]", '"text"']
            fields[target] = [draw(st.sampled_from(broken))]
    raw = urllib.parse.urlencode(fields, doseq=True).encode()
    if how == "utf8":
        bad = draw(st.sampled_from(NOT_UTF8))
        escaped = draw(st.booleans())
        chunk = urllib.parse.quote_from_bytes(bad).encode() if escaped else bad
        raw += b"&" + name.encode() + b"=" + chunk
    return raw, "application/x-www-form-urlencoded"


# -- the checks --------------------------------------------------------------------------------------------


def _post(client, url: str, raw: bytes, content_type: str, htmx: bool = False):
    extra = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    return client.generic("POST", url, raw, content_type=content_type, **extra)


def _refused(r, api: bool) -> str | None:
    """None when the answer is a clean refusal; else what is wrong with it. Our API (/api/v1/) answers
    every error as an OperationOutcome; the schema and Prometheus endpoints have their own formats."""
    if not 400 <= r.status_code < 500:
        return f"answered {r.status_code}"
    if api and r.wsgi_request.path.startswith("/api/v1/"):
        try:
            outcome = json.loads(r.content)
        except ValueError:
            return "not JSON"
        if outcome.get("resourceType") != "OperationOutcome":
            return "not an OperationOutcome"
    return None


@HOSTILE
@given(data=st.data())
def test_hostile_json_to_every_api_post_endpoint(scene, data):
    e = data.draw(st.sampled_from([e for e in scene.endpoints if e.api]), label="endpoint")
    role = data.draw(st.sampled_from(sorted(scene.api_clients)), label="role")
    raw, content_type = hostile_json(
        data.draw, api_body(e, data.draw(st.integers(0, 10**9))), gate.max_bytes(e.kind)
    )
    before = scene.fingerprint()
    r = _post(scene.api_clients[role], e.url, raw, content_type)
    problem = _refused(r, api=True)
    assert problem is None, (e.name, role, problem, raw[:300], r.content[:300])
    assert scene.fingerprint() == before, (e.name, role, raw[:300])


@HOSTILE
@given(data=st.data())
def test_hostile_forms_to_every_console_post_endpoint(scene, data):
    e = data.draw(st.sampled_from([e for e in scene.endpoints if not e.api]), label="endpoint")
    role = data.draw(st.sampled_from(sorted(scene.console_clients)), label="role")
    raw, content_type = hostile_form(data.draw, form_body(e, scene), scene)
    before = scene.fingerprint()
    r = _post(scene.console_clients[role], e.url, raw, content_type, htmx=data.draw(st.booleans()))
    problem = _refused(r, api=False)
    assert problem is None, (e.name, role, problem, raw[:300], r.content[:300])
    assert scene.fingerprint() == before, (e.name, role, raw[:300])


@pytest.mark.parametrize("side", ["api", "console"])
def test_every_post_endpoint_refuses_each_kind_of_hostile_body(scene, side):
    failures = []
    chosen = [e for e in scene.endpoints if e.api == (side == "api")]
    clients = scene.api_clients if side == "api" else scene.console_clients
    for e in chosen:
        before = scene.fingerprint()
        cases = _api_cases(e) if e.api else _form_cases(e, scene)
        for role, client in clients.items():
            for label, raw, content_type in cases:
                r = _post(client, e.url, raw, content_type)
                problem = _refused(r, api=e.api)
                if problem:
                    failures.append((e.name, role, label, problem))
        if scene.fingerprint() != before:
            failures.append((e.name, "wrote to the database"))
    assert not failures, failures
    assert len(chosen) >= (14 if side == "api" else 40)


def _api_cases(e: Endpoint) -> list[tuple[str, bytes, str]]:
    depth = django_settings.WRITEBACK_MAX_JSON_DEPTH + 1
    base = api_body(e, 1)
    nul_key = {**base, "idempotency_key": "key\x00"} if e.name == "api-events" else {**base, "x\x00": 1}
    return [
        ("deep", json.dumps({**base, "deep": _nested(depth)}).encode(), "application/json"),
        ("deep-text", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        ("8MB", b'{"x": "' + b"x" * (8 * 1024 * 1024) + b'"}', "application/json"),
        ("NUL value", json.dumps({**base, "nul": "a\x00b"}).encode(), "application/json"),
        ("NUL name", json.dumps(nul_key).encode(), "application/json"),
        ("bell", json.dumps({**base, "bell": "ding\x07"}).encode(), "application/json"),
        ("surrogate", json.dumps({**base, "s": "\udfff"}).encode(), "application/json"),
        ("not UTF-8", json.dumps(base).encode()[:-1] + b', "x": "\xff"}', "application/json"),
        ("not an object", json.dumps([base]).encode(), "application/json"),
        ("NaN", json.dumps(base).encode()[:-1] + b', "x": NaN}', "application/json"),
        ("form", urllib.parse.urlencode(base).encode(), "application/x-www-form-urlencoded"),
    ]


def _form_cases(e: Endpoint, scene: Scene) -> list[tuple[str, bytes, str]]:
    base = form_body(e, scene)
    encoded = urllib.parse.urlencode(base, doseq=True)
    first = next(iter(base))
    cases = [
        ("NUL value", f"{encoded}&{first}=a%00b", "application/x-www-form-urlencoded"),
        ("NUL name", f"{encoded}&x%00=1", "application/x-www-form-urlencoded"),
        ("bell", f"{encoded}&{first}=ding%07", "application/x-www-form-urlencoded"),
        ("8MB", f"{encoded}&{first}=" + "x" * (8 * 1024 * 1024), "application/x-www-form-urlencoded"),
        (
            "over-long",
            f"{encoded}&{first}=" + "y" * (django_settings.WRITEBACK_MAX_STRING_CHARS + 1),
            "application/x-www-form-urlencoded",
        ),
        ("escaped not UTF-8", f"{encoded}&{first}=%FF%FE", "application/x-www-form-urlencoded"),
        ("raw not UTF-8", encoded.encode() + b"&x=\xff", "application/x-www-form-urlencoded"),
        ("JSON body", json.dumps(base).encode(), "application/json"),
        ("multipart NUL", encode_multipart(BOUNDARY, {**base, first: "a\x00b"}), MULTIPART_CONTENT),
    ]
    for f in ("data", "payload", "value-0"):
        if f in base:
            cases.append(
                (
                    "JSON NUL",
                    urllib.parse.urlencode({**base, f: '{"a": "\\u0000"}'}),
                    "application/x-www-form-urlencoded",
                )
            )
            cases.append(
                (
                    "JSON deep",
                    urllib.parse.urlencode({**base, f: "[" * 5000 + "]" * 5000}),
                    "application/x-www-form-urlencoded",
                )
            )
    return [(label, raw.encode() if isinstance(raw, str) else raw, ctype) for label, raw, ctype in cases]


def test_the_valid_bodies_are_accepted(scene):
    """The bodies the sweep starts from do act when nothing in them is hostile: every refusal above is
    the hostile change's doing."""
    by_name = {e.name: e for e in scene.endpoints}
    for role, name, status in [
        ("clinician", "api-write-approve", 200),
        ("consent-app", "api-consents", 201),
        ("consent-app", "api-events", 201),
        ("admin", "api-write-replay", 202),
    ]:
        e = by_name[name]
        r = scene.api_clients[role].post(e.url, api_body(e, 7), format="json")
        assert r.status_code == status, (name, r.json())
    e = by_name["console-tenant-mode"]
    r = scene.console_clients["engineer"].post(e.url, form_body(e, scene))
    assert r.status_code < 400 and Tenant.objects.get(slug="generic-main").mode == "paused"
