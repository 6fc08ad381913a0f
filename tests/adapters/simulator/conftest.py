"""Simulator tests run over real sockets: a simulator on a free port, an httpx client against it."""

from collections.abc import Iterator

import httpx
import pytest

from adapters.simulator import SimulatorHandle, start_simulator

MRN = "urn:example:mrn"
WB = "urn:fhir-writeback:write-id"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def _running(profile: str, **kwargs) -> Iterator[SimulatorHandle]:
    handle = start_simulator(profile, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def generic() -> Iterator[SimulatorHandle]:
    yield from _running("generic")


@pytest.fixture
def epic() -> Iterator[SimulatorHandle]:
    yield from _running("epic")


@pytest.fixture
def athena() -> Iterator[SimulatorHandle]:
    yield from _running("athena")


@pytest.fixture
def veradigm() -> Iterator[SimulatorHandle]:
    yield from _running("veradigm")


def vital(
    patient: str = "pat-1001", *, code: str = "29463-7", value: float = 81.6, write_id: str = "w-1", **extra
):
    """A body-weight Observation as the write-back engine sends it."""
    resource = {
        "resourceType": "Observation",
        "identifier": [{"system": WB, "value": write_id}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-20T14:00:00Z",
        "valueQuantity": {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    resource.update(extra)
    return resource


def issue(response: httpx.Response) -> dict:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]
