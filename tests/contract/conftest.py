"""Contract tests: the adapters against the EHR simulator over real sockets, one simulator per profile
per module. Each test takes a patient of its own from the demo seed (pat-1002..pat-1200, each with an
open encounter enc-{n} and a requested task task-{n}), so tests need no reset between them."""

from __future__ import annotations

import pytest

from adapters.base import TargetConfig
from adapters.registry import adapter_class, get_adapter
from adapters.simulator import SimulatorHandle, start_simulator
from tests.contract.cases import PROFILES, SETTINGS, SYSTEM, UNITY_PASSWORD_ENV

FIRST, LAST = 1002, 1200  # pat-1001 is kept for cases that need its finished encounter enc-78


class PatientPool:
    def __init__(self, sim: SimulatorHandle) -> None:
        self.sim = sim
        self.next = FIRST

    def take(self) -> int:
        if self.next > LAST:
            self.sim.reset("demo")
            self.next = FIRST
        self.next += 1
        return self.next - 1


def target_for(sim: SimulatorHandle, **overrides) -> TargetConfig:
    profile = sim.profile
    caps = adapter_class(profile).capabilities()
    enabled = set(caps.writes) | {(t, "read") for t, _ in caps.writes}
    conditional: dict[str, bool] = {}
    if profile == "generic":
        # Patient changes go as JSON Patch, Task changes as read-merge-PUT: both paths are exercised.
        enabled.discard(("Task", "patch"))
        # The registry as discovery records it from the generic profile's /metadata.
        conditional = {t: True for t, op in caps.writes if op == "create"}
    fields = {
        "slug": f"{profile}-contract",
        "vendor": profile,
        "base_url": sim.fhir_base,
        "identifier_system": SYSTEM,
        "settings": dict(SETTINGS.get(profile, {})),
        "enabled": frozenset(enabled),
        "conditional_create": conditional,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
    }
    fields.update(overrides)
    return TargetConfig(**fields)


@pytest.fixture(scope="session", autouse=True)
def _unity_password():
    """The simulator's Unity password, behind the secret reference the tenant settings name."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(UNITY_PASSWORD_ENV, "secret")
        yield


@pytest.fixture(scope="module", params=PROFILES)
def sim(request):
    handle = start_simulator(request.param, seed="demo")
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def pool(sim):
    return PatientPool(sim)


@pytest.fixture
def n(pool) -> int:
    """A patient number of this test's own."""
    return pool.take()


@pytest.fixture
def adapter(sim):
    a = get_adapter(target_for(sim))
    yield a
    a.close()
