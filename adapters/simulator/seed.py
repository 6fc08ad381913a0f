"""Seed data: the `demo` chart every profile starts with (same ids everywhere; see docs/simulator.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

MRN_SYSTEM = "urn:example:mrn"
FIRST_PATIENT, LAST_PATIENT = 1001, 1200

_GIVEN = ["Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luca"]
_FAMILY = ["Alvarez", "Brooks", "Chen", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ivanova", "Jensen"]
_STREETS = ["Oak St", "Maple Ave", "Cedar Rd", "Elm St", "Pine Ln", "Birch Way"]


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _patient(n: int) -> dict[str, Any]:
    i = n - FIRST_PATIENT
    return {
        "resourceType": "Patient",
        "id": f"pat-{n}",
        "identifier": [{"system": MRN_SYSTEM, "value": f"MRN{n}"}],
        "active": True,
        "name": [
            {"use": "official", "family": _FAMILY[i % len(_FAMILY)], "given": [_GIVEN[i % len(_GIVEN)]]}
        ],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{1940 + i % 60}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "telecom": [{"system": "phone", "value": f"555-01{i % 100:02d}", "use": "home"}],
        "address": [
            {
                "use": "home",
                "line": [f"{100 + i} {_STREETS[i % len(_STREETS)]}"],
                "city": "Springfield",
                "state": "IL",
                "postalCode": f"627{i % 100:02d}",
            }
        ],
    }


def _encounter(encounter_id: str, patient_id: str, *, start: datetime, end: datetime | None = None):
    period = {"start": _instant(start)} | ({"end": _instant(end)} if end else {})
    return {
        "resourceType": "Encounter",
        "id": encounter_id,
        "status": "finished" if end else "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": period,
    }


def _task(task_id: str, patient_id: str, *, authored: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": "requested",
        "intent": "order",
        "code": {"text": "Referral follow-up"},
        "description": "Follow up on the referral with the patient",
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": _instant(authored),
    }


def demo_resources() -> list[dict[str, Any]]:
    """200 patients with an open encounter and a requested task each, plus enc-77/enc-78/task-88 on
    pat-1001. Encounters start two hours before seeding, so they are never in the future."""
    now = datetime.now(UTC)
    start = now - timedelta(hours=2)
    resources: list[dict[str, Any]] = []
    for n in range(FIRST_PATIENT, LAST_PATIENT + 1):
        resources.append(_patient(n))
        resources.append(_encounter(f"enc-{n}", f"pat-{n}", start=start))
        resources.append(_task(f"task-{n}", f"pat-{n}", authored=start))
    resources.append(_encounter("enc-77", "pat-1001", start=start))
    resources.append(
        _encounter("enc-78", "pat-1001", start=now - timedelta(days=3), end=now - timedelta(days=2))
    )
    resources.append(_task("task-88", "pat-1001", authored=start))
    return resources


SEEDS = {"demo": demo_resources, "none": list}


def named_seed(name: str) -> list[dict[str, Any]]:
    try:
        return SEEDS[name]()
    except KeyError:
        raise ValueError(f"unknown seed {name!r}; known: {', '.join(SEEDS)}")
