"""The events the benchmarks post (no Django needed to build them)."""

TENANT = "bench"
PATIENTS = range(1001, 1201)  # the simulator's demo seed: pat-1001 .. pat-1200

VITALS = [
    {"kind": "blood_pressure", "systolic": 128, "diastolic": 82, "unit": "mmHg"},
    {"kind": "heart_rate", "value": 72, "unit": "bpm"},
    {"kind": "body_weight", "value": 180, "unit": "lb"},
    {"kind": "body_temperature", "value": 98.6, "unit": "F"},
    {"kind": "respiratory_rate", "value": 16, "unit": "/min"},
    {"kind": "oxygen_saturation", "value": 97, "unit": "%"},
]


def vitals_event(key: str, n: int, measurements: int = 6) -> dict:
    """The spec's vitals example for patient pat-{n} (6 measurements -> 6 Observation writes)."""
    return {
        "tenant": TENANT,
        "type": "vitals.recorded",
        "idempotency_key": key,
        "source": {"system": "bench", "message_id": f"msg-{key}"},
        "occurred_at": "2026-11-20T14:03:00-05:00",
        "patient": {"id": f"pat-{n}", "identifier": {"system": "urn:example:mrn", "value": f"MRN{n}"}},
        "encounter": {"id": f"enc-{n}", "status": "in-progress"},
        "initiator": {"user": "amy.clinician"},
        "device": {"id": "bp-cuff-0042"},
        "data": {"effective_at": "2026-11-20T14:00:00-05:00", "measurements": VITALS[:measurements]},
    }
