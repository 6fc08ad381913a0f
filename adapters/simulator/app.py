"""The simulator: one store, one profile, faults and auth in front of it, a log of what it served."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from . import control
from .faults import FaultInjector, FaultPlan
from .messages import BadRequest, Request, Response, json_response, text_response
from .profiles import make_profile
from .redact import redact_headers
from .search import compile_search
from .seed import named_seed
from .smart import TokenService, oauth_error
from .store import NotFound, Resource, Store, identifiers_of, now_instant

log = logging.getLogger(__name__)
REQUEST_LOG_SIZE = 5000
LOGGED_BODY_CHARS = 2000
UNITY_USERS = {"writeback": "secret"}


@dataclass(frozen=True)
class SimulatorConfig:
    profile: str = "generic"
    auth: str = "none"  # none | smart
    public_keys: tuple[str, ...] = ()
    client_id: str = "writeback-client"
    tenant: str = "CP00101"
    practice_id: str = "195900"
    token_lifetime: int = 300
    unity_users: dict[str, str] = field(default_factory=lambda: dict(UNITY_USERS))
    # The scopes the client registration was granted (SMART); None = every scope.
    granted_scopes: tuple[str, ...] | None = None


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        if config.auth not in ("none", "smart"):
            raise ValueError(f"auth must be 'none' or 'smart', not {config.auth!r}")
        self.config = config
        self.origin = ""  # set once the server has its port
        self.store = Store()
        self.faults = FaultInjector()
        self.profile = make_profile(config.profile, self)
        self.tokens = TokenService(
            client_id=config.client_id,
            public_keys=list(config.public_keys),
            lifetime=config.token_lifetime,
            granted=config.granted_scopes,
            ignores_requested_scope=self.profile.token_ignores_requested_scope,
        )
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._log_lock = threading.Lock()

    @property
    def token_url(self) -> str:
        return self.origin + self.profile.token_path

    # -- serving -----------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        """Never raises: whatever goes wrong becomes an error answer in the surface's own shape."""
        if req.path == "/_sim" or req.path.startswith("/_sim/"):
            return control.handle(self, req)
        started = time.perf_counter()
        if req.path == self.profile.token_path:
            response = self._token(req)
        else:
            response = self._api(req)
        self._record(req, response, started)
        return response

    def _token(self, req: Request) -> Response:
        if req.method != "POST":
            return oauth_error(405, "invalid_request", "the token endpoint takes POST")
        try:
            form = req.form()
        except BadRequest as exc:
            return oauth_error(400, "invalid_request", str(exc))
        host_url = f"http://{req.header('host')}{self.profile.token_path}"
        return self.tokens.issue(form, [self.token_url, host_url])

    def _api(self, req: Request) -> Response:
        surface = self.profile.surface(req.path)
        if surface is None:
            detail = f"no {self.profile.name} endpoint here"
            return json_response(404, {"error": "not_found", "detail": detail})
        try:
            return self._faulted(req, surface)
        except Exception:
            log.exception("simulator failed on %s %s", req.method, req.path)
            return self.profile.error(surface, 500, "internal server error", issue="exception")

    def _faulted(self, req: Request, surface: str) -> Response:
        if self.profile.faultable(req):
            plan = self.faults.plan(has_if_match=self.profile.carries_if_match(req))
        else:
            plan = FaultPlan()
        if plan.slow_seconds:
            time.sleep(plan.slow_seconds)
        injected = self._injected(surface, plan)
        if injected is not None:
            return injected
        refused = self._unauthorized(req, surface)
        if refused is not None:
            return refused
        req.stale_version = plan.stale_version
        response = self.profile.handle(req, surface)
        if plan.stale_version:
            response.fault = "stale_version"
        if plan.stall_seconds:
            response.stall = plan.stall_seconds
            response.fault = "timeout_after_commit"
        return response

    def _unauthorized(self, req: Request, surface: str) -> Response | None:
        """401 without a live token, 403 insufficient_scope when its scopes do not cover the request.
        Unity authenticates with its own GetToken / GetUserAuthentication session, not SMART."""
        if self.config.auth != "smart" or surface == "unity" or self.profile.public(req, surface):
            return None
        problem, scopes = self.tokens.check(req.header("authorization"))
        challenge = 'Bearer realm="ehr-simulator"'
        if problem:
            if req.header("authorization"):
                challenge += f', error="invalid_token", error_description="{problem}"'
            headers = {"WWW-Authenticate": challenge}
            return self.profile.error(surface, 401, problem, issue="login", headers=headers)
        problem = self.profile.scope_problem(req, surface, scopes)
        if problem:
            headers = {"WWW-Authenticate": f'{challenge}, error="insufficient_scope"'}
            return self.profile.error(surface, 403, problem, issue="forbidden", headers=headers)
        return None

    def _injected(self, surface: str, plan: FaultPlan) -> Response | None:
        """The answer a fault gives instead of serving the request, if one fired."""
        if plan.maintenance_retry_after is not None:
            retry = {"Retry-After": str(plan.maintenance_retry_after)}
            answer = self.profile.error(
                surface, 503, "down for scheduled maintenance", issue="transient", headers=retry
            )
            answer.fault = "maintenance"
        elif plan.drop_connection:
            answer = Response(0, drop=True, fault="drop_connection")
        elif plan.error_status == 502:  # a gateway answers, not the EHR: no JSON body
            answer = text_response(502, "Bad Gateway")
            answer.fault = "error_5xx"
        elif plan.error_status == 500:
            answer = self.profile.error(surface, 500, "internal server error", issue="exception")
            answer.fault = "error_5xx"
        elif plan.rate_limit:
            answer = self.profile.throttled(surface)
            answer.fault = "rate_limit"
        else:
            return None
        return answer

    def _record(self, req: Request, response: Response, started: float) -> None:
        is_token = req.path == self.profile.token_path
        entry = {
            "time": now_instant(),
            "method": req.method,
            "path": req.target,
            "status": None if response.drop else response.status,
            "headers": redact_headers(req.headers),
            "body": "" if is_token else self.profile.logged_body(req)[:LOGGED_BODY_CHARS],
            "fault": response.fault,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        with self._log_lock:
            self._log.append(entry)

    # -- operations for tests and the demo (in process and under /_sim) -----------------------------
    def set_faults(self, spec: str | dict[str, Any] | None) -> dict[str, Any]:
        self.faults.configure(spec)
        return self.faults.snapshot()

    def seed(self, resources: list[Resource] | str) -> int:
        if isinstance(resources, str):
            resources = named_seed(resources)
        for resource in resources:
            if not isinstance(resource, dict) or not resource.get("resourceType") or not resource.get("id"):
                raise ValueError("every seeded resource needs a resourceType and an id")
        return self.store.seed(resources)

    def reset(self, seed: str | None = None) -> None:
        """Empties the store, the faults and the request log; then loads `seed` if named."""
        self.store.reset()
        self.faults.clear()
        with self._log_lock:
            self._log.clear()
        if seed:
            self.seed(seed)

    def find(
        self, resource_type: str | None = None, *, identifier: str | None = None, patient: str | None = None
    ) -> list[Resource]:
        query = {k: [v] for k, v in (("identifier", identifier), ("patient", patient)) if v}
        where = compile_search(query).where
        types = [resource_type] if resource_type else self.store.types()
        return [copy.deepcopy(r) for t in types for r in self.store.search(t, where)]

    def count_by_identifier(self, system: str) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for resource in self.store.all_current():
            values = {i.get("value") for i in identifiers_of(resource) if i.get("system") == system}
            counts.update(v for v in values if isinstance(v, str))
        return dict(counts)

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._log_lock:
            entries = list(self._log)
        return copy.deepcopy(entries[-limit:]) if limit > 0 else []

    def edit(self, resource_type: str, resource_id: str, patch: dict[str, Any]) -> Resource:
        """A clinician's edit in the EHR: top-level fields set (None removes one); bumps the version."""

        def change(current: Resource) -> Resource:
            for key, value in patch.items():
                if key in ("resourceType", "id", "meta"):
                    continue
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = copy.deepcopy(value)
            return current

        try:
            return copy.deepcopy(self.store.modify(resource_type, resource_id, change))
        except NotFound:
            raise KeyError(f"{resource_type}/{resource_id} is not stored")

    def health(self) -> dict[str, Any]:
        return {"profile": self.profile.name, "resources": self.store.count()}
