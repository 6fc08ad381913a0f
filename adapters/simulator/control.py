"""The `/_sim/*` control endpoints (docs/wire-formats.md): never faulted, never behind auth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .messages import BadRequest, Request, Response, json_response

if TYPE_CHECKING:
    from .app import Simulator


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _body(req: Request) -> dict[str, Any]:
    data = req.json() if req.body.strip() else {}
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def handle(sim: Simulator, req: Request) -> Response:
    try:
        return _route(sim, req)
    except BadRequest as exc:
        return _error(400, str(exc))
    except ValueError as exc:
        return _error(400, str(exc))
    except KeyError as exc:
        return _error(404, str(exc.args[0]) if exc.args else "not found")


def _route(sim: Simulator, req: Request) -> Response:
    route = (req.method, req.path.rstrip("/"))
    match route:
        case ("GET", "/_sim/health"):
            return json_response(200, sim.health())
        case ("GET", "/_sim/faults"):
            return json_response(200, sim.faults.snapshot())
        case ("PUT", "/_sim/faults"):
            return json_response(200, sim.set_faults(_body(req)))
        case ("DELETE", "/_sim/faults"):
            return json_response(200, sim.set_faults(None))
        case ("GET", "/_sim/resources"):
            found = sim.find(
                req.param("type") or None,
                identifier=req.param("identifier") or None,
                patient=req.param("patient") or None,
            )
            return json_response(200, {"resources": found})
        case ("GET", "/_sim/requests"):
            try:
                limit = int(req.param("limit", "100"))
            except ValueError:
                raise BadRequest("limit must be an integer")
            return json_response(200, {"requests": sim.recent_requests(limit)})
        case ("POST", "/_sim/seed"):
            data = _body(req)
            if "seed" in data:  # a named seed, e.g. {"seed": "demo"}
                return json_response(200, {"seeded": sim.seed(str(data["seed"]))})
            resources = data.get("resources")
            if not isinstance(resources, list):
                raise BadRequest('seed takes {"resources": [FHIR resources with ids]} or {"seed": "demo"}')
            return json_response(200, {"seeded": sim.seed(resources)})
        case ("POST", "/_sim/reset"):
            sim.reset(_body(req).get("seed"))
            return json_response(200, sim.health())
        case ("POST", "/_sim/edit"):
            data = _body(req)
            if not isinstance(data.get("patch"), dict) or not data.get("type") or not data.get("id"):
                raise BadRequest('edit takes {"type": T, "id": I, "patch": {field: value}}')
            return json_response(200, sim.edit(str(data["type"]), str(data["id"]), data["patch"]))
        case ("POST", "/_sim/tokens/expire"):
            return json_response(200, {"expired": sim.tokens.expire_all()})
    known = {
        "/_sim/health",
        "/_sim/faults",
        "/_sim/resources",
        "/_sim/requests",
        "/_sim/seed",
        "/_sim/reset",
        "/_sim/edit",
        "/_sim/tokens/expire",
    }
    if route[1] in known:
        return _error(405, f"{req.method} is not allowed on {route[1]}")
    return _error(404, f"no control endpoint at {req.path}")
