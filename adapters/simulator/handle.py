"""Running the simulator in process (tests, the demo): start it on a background thread, drive it."""

from __future__ import annotations

import threading
from typing import Any

from .app import UNITY_USERS, Simulator, SimulatorConfig
from .server import SimulatorServer
from .store import Resource


class SimulatorHandle:
    """A running simulator. The methods act on it directly, as the `/_sim/*` endpoints do over HTTP."""

    def __init__(self, server: SimulatorServer, sim: Simulator, thread: threading.Thread) -> None:
        self._server = server
        self._sim = sim
        self._thread = thread
        self.origin = sim.origin
        self.fhir_base = sim.profile.fhir_base
        self.token_url = sim.token_url
        self.profile = sim.profile.name
        self.port = server.server_address[1]

    def __repr__(self) -> str:
        return f"<SimulatorHandle {self.profile} {self.origin}>"

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, spec: str | dict[str, Any]) -> None:
        self._sim.set_faults(spec)

    def clear_faults(self) -> None:
        self._sim.set_faults(None)

    def faults(self) -> dict[str, Any]:
        """The active fault settings and how many times each fault fired."""
        return self._sim.faults.snapshot()

    def seed(self, resources: list[Resource]) -> None:
        self._sim.seed(resources)

    def reset(self, seed: str | None = None) -> None:
        """Empties the store, the faults and the request log (then loads the named seed, if given)."""
        self._sim.reset(seed)

    def resources(
        self, resource_type: str | None = None, *, identifier: str | None = None, patient: str | None = None
    ) -> list[Resource]:
        """Current versions (copies), whichever API wrote them."""
        return self._sim.find(resource_type, identifier=identifier, patient=patient)

    def count_by_identifier(self, system: str) -> dict[str, int]:
        return self._sim.count_by_identifier(system)

    def requests(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._sim.recent_requests(limit)

    def edit(self, resource_type: str, resource_id: str, patch: dict[str, Any]) -> Resource:
        return self._sim.edit(resource_type, resource_id, patch)

    def expire_tokens(self) -> None:
        self._sim.tokens.expire_all()

    def stop(self) -> None:
        """Stops serving and ends open connections (stalled answers included). Safe to call twice."""
        self._server.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_simulator(
    profile: str = "generic",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: str | dict[str, Any] | None = None,
    seed: str | list[dict[str, Any]] | None = "demo",
    auth: str = "none",
    public_keys: list[str] | None = None,
    client_id: str = "writeback-client",
    tenant: str = "CP00101",
    practice_id: str = "195900",
    token_lifetime: int = 300,
    unity_users: dict[str, str] | None = None,
    granted_scopes: list[str] | None = None,
) -> SimulatorHandle:
    """Serves a simulator on a background thread; port 0 picks a free port. `unity_users` are the
    Veradigm Unity accounts (username -> password; default {"writeback": "secret"}); `granted_scopes`
    the SMART client registration's scopes (None: every scope)."""
    config = SimulatorConfig(
        profile=profile,
        auth=auth,
        public_keys=tuple(public_keys or ()),
        client_id=client_id,
        tenant=tenant,
        practice_id=practice_id,
        token_lifetime=token_lifetime,
        unity_users=dict(unity_users or UNITY_USERS),
        granted_scopes=tuple(granted_scopes) if granted_scopes is not None else None,
    )
    sim = Simulator(config)
    if faults:
        sim.set_faults(faults)
    if seed:
        sim.seed(seed)
    server = SimulatorServer((host, port), sim)
    bound_port = server.server_address[1]
    sim.origin = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"ehr-simulator-{profile}-{bound_port}",
        daemon=True,
    )
    thread.start()
    return SimulatorHandle(server, sim, thread)
