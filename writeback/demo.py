"""The demo: EHR simulators for all four vendors, tenants pointed at them, people in every role,
a realistic ledger (committed writes, approvals waiting, a conflict, a parked stream, a shadow tenant),
a sync worker, a trickle of new events, and the console. Local use only: fixed demo passwords, so the
command refuses any database but a local SQLite file (`database_problem`)."""

import itertools
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from rest_framework.test import APIClient

from adapters.simulator import SimulatorHandle, start_simulator
from writeback.models import Tenant, TenantMode
from writeback.services.consents import consent_create
from writeback.services.discovery import capabilities_discover
from writeback.services.permissions import client_app_enroll, grant_action_permission, has_role_for
from writeback.services.tenants import tenant_create, tenant_grant, tenant_set_base_url
from writeback.services.tokens import api_token_create

DEMO_PASSWORD = "demo"
PEOPLE = [
    ("amy.clinician", "clinician"),
    ("bob.clinician", "clinician"),
    ("ada.admin", "admin"),
    ("eve.engineer", "integration_engineer"),
    ("ed.engineer", "integration_engineer"),
    ("al.auditor", "auditor"),
]
PROFILES = ["generic", "epic", "athena", "veradigm"]
PATIENTS = [f"pat-{n}" for n in range(1001, 1021)]
UNITY_PASSWORD_ENV = "WRITEBACK_DEMO_UNITY_PASSWORD"


def database_problem() -> str:
    """Why this database must not get the demo ('' for a local SQLite file): the demo makes users
    whose password is 'demo', points its tenants at local simulators and prints an API token."""
    from django.db import connections

    db = connections["default"]
    if db.vendor == "sqlite":
        return ""
    where = db.settings_dict.get("HOST") or "a local socket"
    return f"the database is {db.vendor} ({db.settings_dict.get('NAME')} on {where}), not a local SQLite file"


@dataclass
class Demo:
    sims: dict[str, SimulatorHandle]
    api: APIClient
    key: str


def start_simulators(base_port: int) -> dict[str, SimulatorHandle]:
    return {p: start_simulator(p, port=base_port + i, seed="demo") for i, p in enumerate(PROFILES)}


def _tenant_specs(sims: dict[str, SimulatorHandle]) -> list[dict[str, Any]]:
    os.environ.setdefault(UNITY_PASSWORD_ENV, "secret")  # the simulator's demo Unity user
    ref = f"env:{UNITY_PASSWORD_ENV}"
    return [
        {
            "slug": "generic-main",
            "vendor": "generic",
            "base_url": sims["generic"].fhir_base,
            "name": "Springfield General (FHIR R4)",
        },
        {
            "slug": "epic-main",
            "vendor": "epic",
            "base_url": sims["epic"].fhir_base,
            "name": "Epic — Main Campus",
        },
        {
            "slug": "athena-clinic",
            "vendor": "athena",
            "base_url": sims["athena"].fhir_base,
            "name": "athenaOne — Family Clinic",
            "settings": {"practice_id": "195900", "department_id": "1", "document_type_id": "340"},
        },
        {
            "slug": "veradigm-ortho",
            "vendor": "veradigm",
            "base_url": sims["veradigm"].fhir_base,
            "name": "Veradigm — Orthopedics",
            "settings": {
                "unity_username": "writeback",
                "unity_password_ref": ref,
                "unity_appname": "writeback",
                "unity_ehr_user": "writeback",
                "unity_ehr_password_ref": ref,
            },
        },
        {
            "slug": "generic-shadow",
            "vendor": "generic",
            "base_url": sims["generic"].fhir_base,
            "name": "Springfield General (shadow rollout)",
            "mode": TenantMode.SHADOW,
        },
    ]


def seed(sims: dict[str, SimulatorHandle], out: TextIO) -> Demo:
    """Creates people, tenants, consents and a token; posts the opening events. Safe to call again."""
    User = get_user_model()
    people = {}
    for username, role in PEOPLE:
        user, created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.org"}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
            user.groups.add(Group.objects.get(name=role))
        people[username] = user
    fresh = not Tenant.objects.filter(slug="generic-main").exists()
    for spec in _tenant_specs(sims):
        tenant = Tenant.objects.filter(slug=spec["slug"]).first()
        if tenant is None:
            tenant = tenant_create(actor="demo", **spec)
            capabilities_discover(tenant=tenant, actor="demo")
            for user in people.values():
                tenant_grant(tenant=tenant, user=user, actor="demo")
            for patient in PATIENTS:
                consent_create(tenant=tenant, patient_ref=patient, actor="demo")
        elif tenant.base_url != spec["base_url"]:
            # The simulators may run on other ports than last time.
            tenant_set_base_url(
                tenant=tenant, base_url=spec["base_url"], actor="demo", reason="demo simulators restarted"
            )
    service = User.objects.get_or_create(username="intake-portal")[0]
    if not has_role_for(service, "submit_on_behalf"):
        # The portal posts events in its clinicians' names (`create_api_token --on-behalf`).
        client_app_enroll(service, actor="demo")
        grant_action_permission(service, "submit_on_behalf", actor="demo")
    # The token reaches the demo's own tenants only, whatever else the database holds.
    demo_tenants = list(Tenant.objects.filter(slug__in=[spec["slug"] for spec in _tenant_specs(sims)]))
    _, key = api_token_create(user=service, tenants=demo_tenants, name="demo", actor="demo")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    demo = Demo(sims=sims, api=api, key=key)
    if fresh:
        _opening_events(demo, out)
    return demo


def post(demo: Demo, body: dict[str, Any]) -> int:
    return demo.api.post("/api/v1/events", body, format="json").status_code


_counter = itertools.count(1)


def event(
    tenant: str, event_type: str, patient: str, data: dict[str, Any], **envelope: Any
) -> dict[str, Any]:
    n = next(_counter)
    number = patient.split("-")[-1]
    body = {
        "tenant": tenant,
        "type": event_type,
        "idempotency_key": f"demo-{tenant}-{int(time.time() * 1000)}-{n}",
        "source": {"system": "demo-portal", "message_id": f"demo-{time.time_ns()}-{n}"},
        "occurred_at": _now(),
        "patient": {"id": patient, "identifier": {"system": "urn:example:mrn", "value": f"MRN{number}"}},
        "encounter": {"id": f"enc-{number}", "status": "in-progress"},
        "initiator": {"user": "amy.clinician"},
        "data": data,
    }
    body.update(envelope)
    return body


def _now() -> str:
    from django.utils import timezone

    return timezone.now().replace(microsecond=0).isoformat()


def vitals(rng: random.Random) -> dict[str, Any]:
    return {
        "effective_at": _now(),
        "measurements": [
            {
                "kind": "blood_pressure",
                "systolic": rng.randint(110, 150),
                "diastolic": rng.randint(65, 95),
                "unit": "mmHg",
            },
            {"kind": "heart_rate", "value": rng.randint(58, 96), "unit": "bpm"},
            {"kind": "body_weight", "value": rng.randint(120, 240), "unit": "lb"},
        ],
    }


PROBLEM = {
    "code": {"system": "SNOMED", "code": "38341003", "display": "Hypertensive disorder"},
    "clinical_status": "active",
    "onset": "2024-03-01",
    "note": "confirmed at visit",
}
NOTE = {
    "title": "Progress note",
    "type": {"system": "LOINC", "code": "11506-3"},
    "content_type": "text/plain",
    "text": "Patient seen for blood pressure follow-up. Home readings reviewed; continue current plan.",
}
ALLERGY = {
    "substance": {"system": "RxNorm", "code": "7980", "display": "Penicillin G"},
    "criticality": "high",
    "verification_status": "confirmed",
    "reactions": [
        {
            "manifestation": {"system": "SNOMED", "code": "247472004", "display": "Hives"},
            "severity": "moderate",
        }
    ],
}
MEDICATION = {
    "medications": [
        {
            "code": {"system": "RxNorm", "code": "197361", "display": "amlodipine 5 MG Oral Tablet"},
            "status": "active",
            "action": "continue",
            "dosage": "5 mg by mouth once daily",
        }
    ]
}


def _demographics(sims, patient: str, **extra) -> dict[str, Any]:
    current = next(p for p in sims["generic"].resources("Patient") if p["id"] == patient)
    return {
        "base_version": current["meta"]["versionId"],
        "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "mobile"}],
        "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "IL", "postal_code": "62701"}],
        **extra,
    }


def _opening_events(demo: Demo, out: TextIO) -> None:
    rng = random.Random(2026)
    sims = demo.sims
    bodies = []
    for tenant in ("generic-main", "epic-main", "athena-clinic", "veradigm-ortho"):
        for patient in PATIENTS[:4]:
            bodies.append(event(tenant, "vitals.recorded", patient, vitals(rng)))
        bodies.append(event(tenant, "problem.confirmed", "pat-1002", PROBLEM))
        bodies.append(event(tenant, "note.signed", "pat-1003", NOTE))
    bodies += [
        event("generic-main", "allergy.recorded", "pat-1004", ALLERGY),
        event("generic-main", "medication.reconciled", "pat-1005", MEDICATION),
        event("epic-main", "allergy.recorded", "pat-1006", ALLERGY),
        event(
            "generic-main",
            "referral.status_changed",
            "pat-1007",
            {"task_id": "task-1007", "from_status": "requested", "to_status": "accepted"},
        ),
        # A referral whose Task does not exist: fails terminally and parks its stream.
        event(
            "generic-main",
            "referral.status_changed",
            "pat-1008",
            {"task_id": "task-missing", "from_status": "requested", "to_status": "accepted"},
        ),
        event("generic-main", "demographics.updated", "pat-1009", _demographics(sims, "pat-1009")),
        event("generic-shadow", "demographics.updated", "pat-1011", _demographics(sims, "pat-1011")),
        event("generic-shadow", "vitals.recorded", "pat-1011", vitals(rng)),
    ]
    # A clinician edits pat-1010's phone in the EHR after the app read version 1: a conflict to reconcile.
    stale = _demographics(sims, "pat-1010")
    sims["generic"].edit(
        "Patient", "pat-1010", {"telecom": [{"system": "phone", "value": "+15559999", "use": "home"}]}
    )
    bodies.append(event("generic-main", "demographics.updated", "pat-1010", stale))
    statuses = [post(demo, b) for b in bodies]
    out.write(f"demo: posted {len(bodies)} opening events ({statuses.count(201)} stored)\n")


def traffic(demo: Demo, stop: threading.Event, every: float, out: TextIO) -> None:
    """A trickle of new events so the dashboard moves."""
    rng = random.Random()
    tenants = ["generic-main", "epic-main", "athena-clinic", "veradigm-ortho"]
    while not stop.wait(every):
        tenant, patient = rng.choice(tenants), rng.choice(PATIENTS)
        body = (
            event(tenant, "vitals.recorded", patient, vitals(rng))
            if rng.random() < 0.85
            else event(tenant, "problem.confirmed", patient, PROBLEM)
        )
        try:
            post(demo, body)
        except Exception as exc:  # a demo nicety must never take the demo down
            out.write(f"demo traffic: {exc}\n")


def run(*, host: str, port: int, sim_port: int, traffic_every: float, out: TextIO) -> None:
    from django.db import connection

    from writeback.sync.worker import SyncWorker

    call_command("migrate", interactive=False, verbosity=0)
    sims = start_simulators(sim_port)
    demo = seed(sims, out)
    stop = threading.Event()
    worker = SyncWorker(concurrency=4, idle_sleep=0.5)
    threading.Thread(target=worker.run, name="sync-worker", daemon=True).start()
    if traffic_every > 0:
        threading.Thread(target=traffic, args=(demo, stop, traffic_every, out), daemon=True).start()
    connection.close()
    lines = [
        "",
        f"  Console        http://{host}:{port}/          (users: {', '.join(u for u, _ in PEOPLE)}; "
        f"password '{DEMO_PASSWORD}')",
        f"  API            http://{host}:{port}/api/v1/events   (Authorization: Token {demo.key})",
        f"  OpenAPI        http://{host}:{port}/api/schema/",
        *[
            f"  EHR simulator  {p:<9} {s.fhir_base}   (stored resources: {s.origin}/_sim/resources)"
            for p, s in sims.items()
        ],
        "",
    ]
    out.write("\n".join(lines) + "\n")
    try:
        call_command("runserver", f"{host}:{port}", use_reloader=False)
    finally:
        stop.set()
        worker.stopping.set()
        for sim in sims.values():
            sim.stop()
