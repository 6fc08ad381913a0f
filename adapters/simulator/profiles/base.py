"""What every profile shares: the FHIR REST routing, reads, searches, history, and how answers look.

A profile subclass says what its vendor accepts (by overriding the write interactions: create, update,
patch, delete, conditional update and delete, Bundles posted to the base) and how its errors look on each
API surface it serves (`fhir`, and `v1` / `unity` for the proprietary APIs).
"""

from __future__ import annotations

import copy
import re
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from ...identifiers import SINGLE_IDENTIFIER
from ..bundles import entry_requests, is_bundle_post
from ..capability_statements import generic as generic_statement
from ..messages import BadRequest, Request, Response, fhir_response
from ..outcomes import FhirError, operation_outcome
from ..redact import redact_body
from ..resource_types import R4_RESOURCE_TYPES
from ..search import compile_search, searchset
from ..smart import scope_covers
from ..store import Resource, is_deletion, version_of

if TYPE_CHECKING:
    from ..app import Simulator

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
ACCESS_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
V1_WORDS = {"c": "write", "r": "read", "u": "write", "d": "write", "s": "read"}
JSON_TYPES = ("", "application/fhir+json", "application/json")


def _identifier_shape_ok(resource_type: str, identifier: Any) -> bool:
    if resource_type in SINGLE_IDENTIFIER:
        return isinstance(identifier, dict)
    return isinstance(identifier, list) and all(isinstance(i, dict) for i in identifier)


# Elements that are lists of objects wherever R4 defines them on the types we serve.
OBJECT_LISTS = ("telecom", "address", "name", "note", "component", "item", "content", "reaction", "dosage")


def check_structure(resource_type: str, resource: Resource) -> None:
    """The JSON shape checks every FHIR server makes before storing (create, update, a patch's result):
    a malformed element is a 422 OperationOutcome naming it."""

    def refuse(field: str, shape: str) -> FhirError:
        return FhirError(422, f"{field} must be {shape}", issue="structure", expression=[field])

    if "identifier" in resource and not _identifier_shape_ok(resource_type, resource["identifier"]):
        shape = (
            "one Identifier object" if resource_type in SINGLE_IDENTIFIER else "a list of Identifier objects"
        )
        raise refuse("identifier", shape)
    for field in ("subject", "patient", "encounter"):
        if field in resource and not isinstance(resource[field], dict):
            raise refuse(field, "a Reference object")
    if "status" in resource and not isinstance(resource["status"], str):
        raise refuse("status", "a code (a JSON string)")
    for field in OBJECT_LISTS:
        value = resource.get(field)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            raise refuse(field, "a list of objects")


def _access(method: str, rel: str) -> tuple[str, str] | None:
    """(resource type, c|r|u|d|s) an interaction at `rel` (below the base) needs; None for no type."""
    parts = rel.strip("/").split("/")
    if parts[0] not in R4_RESOURCE_TYPES:
        return None
    if len(parts) == 1:
        return parts[0], {"GET": "s", "POST": "c", "PUT": "u", "DELETE": "d"}.get(method, "c")
    return parts[0], {"GET": "r", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "r")


def _history_entry(version: Resource, older: Resource | None, url: str, base: str) -> dict[str, Any]:
    """One entry of a history Bundle. A deletion has no resource and `request.method` DELETE (R4); the
    version after a deletion was a create by update."""
    if is_deletion(version):
        method, status = "DELETE", "204 No Content"
    elif older is None:
        method, status = "POST", "201 Created"
    else:
        method, status = "PUT", "201 Created" if is_deletion(older) else "200 OK"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if not is_deletion(version):
        entry["resource"] = version
    return entry | {
        "request": {"method": method, "url": url},
        "response": {
            "status": status,
            "etag": f'W/"{version_of(version)}"',
            "lastModified": version["meta"]["lastUpdated"],
        },
    }


def http_date(instant: str) -> str:
    return format_datetime(datetime.fromisoformat(instant), usegmt=True)


def if_match_version(req: Request) -> str | None:
    """`W/"3"`, `"3"` or `3` -> "3"; None without an If-Match header."""
    raw = req.header("if-match").strip()
    if not raw:
        return None
    version = raw.removeprefix("W/").strip('"')
    if not version:
        raise FhirError(400, f"If-Match {raw!r} names no version", issue="value")
    return version


def prefer_return(req: Request) -> str:
    for part in req.header("prefer").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "return":
            return value.strip('"')
    return ""


class Profile:
    name = ""
    fhir_base_path = "/fhir"
    token_path = "/oauth2/token"
    error_code_system = ""  # a vendor's system for `issue.details.coding` codes (Epic)
    etag_on_create = True
    absolute_location = True
    default_return = "representation"  # the body of a write answer without `Prefer: return=...`
    token_ignores_requested_scope = False  # Epic grants what the client registration holds
    versioned = True  # ETag and Last-Modified on reads
    keeps_history = True  # vread and _history

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.store = sim.store

    @property
    def fhir_base(self) -> str:
        return self.sim.origin + self.fhir_base_path

    def surface(self, path: str) -> str | None:
        """Which API surface of this profile `path` belongs to, or None."""
        if path == self.fhir_base_path or path.startswith(self.fhir_base_path + "/"):
            return "fhir"
        return None

    def handle(self, req: Request, surface: str) -> Response:
        return self.fhir(req)

    def faultable(self, req: Request) -> bool:
        """False for the vendor's own token calls: like the OAuth token endpoint, never faulted."""
        return True

    def capability_statement(self) -> dict[str, Any]:
        return generic_statement(self.fhir_base)

    def logged_body(self, req: Request) -> str:
        """The request body as the request log keeps it (secrets replaced)."""
        return redact_body(req.body, req.content_type)

    # -- SMART ---------------------------------------------------------------------------------------
    def public(self, req: Request, surface: str) -> bool:
        """Served without a token: the CapabilityStatement, as every vendor we know serves it."""
        return (
            surface == "fhir"
            and req.method == "GET"
            and req.path.rstrip("/") == f"{self.fhir_base_path}/metadata"
        )

    def fhir_access(self, req: Request) -> list[tuple[str, str, str]]:
        """(where, resource type, c|r|u|d|s) for each access a FHIR request needs: one for a REST
        interaction, one per entry of a Bundle posted to the base (which names no type itself)."""
        if is_bundle_post(req, self.fhir_base_path):
            return [
                (f"{entry.label}: ", *need)
                for entry in entry_requests(req, self.fhir_base)
                if (need := _access(entry.method, entry.path)) is not None
            ]
        need = _access(req.method, req.path[len(self.fhir_base_path) :])
        return [("", *need)] if need is not None else []

    def scope_problem(self, req: Request, surface: str, scopes: tuple[str, ...]) -> str:
        """'' when the token's scopes cover the request, else the insufficient_scope reason."""
        for where, rtype, access in self.fhir_access(req) if surface == "fhir" else []:
            if not scope_covers(scopes, rtype, access):
                return (
                    f"insufficient_scope: {where}the access token does not allow {ACCESS_WORDS[access]} on "
                    f"{rtype} (needs system/{rtype}.{access} or system/{rtype}.{V1_WORDS[access]})"
                )
        return ""

    def carries_if_match(self, req: Request) -> bool:
        """Whether the request is version-aware (the stale_version fault applies only then)."""
        if req.header("if-match"):
            return True
        if not is_bundle_post(req, self.fhir_base_path):
            return False
        return any(entry.if_match for entry in entry_requests(req, self.fhir_base))

    # -- answers shaped per surface ----------------------------------------------------------------
    def error(
        self,
        surface: str,
        status: int,
        message: str,
        *,
        issue: str = "processing",
        headers: dict[str, str] | None = None,
    ) -> Response:
        return self.outcome(FhirError(status, message, issue=issue, headers=headers))

    def throttled(self, surface: str) -> Response:
        return self.error(surface, 429, "too many requests", issue="throttled", headers={"Retry-After": "1"})

    def outcome(self, err: FhirError) -> Response:
        body = operation_outcome(
            err.message,
            issue=err.issue,
            code=err.code,
            code_system=self.error_code_system,
            expression=err.expression,
        )
        return fhir_response(err.status, body, headers=err.headers)

    # -- FHIR REST routing -------------------------------------------------------------------------
    def fhir(self, req: Request) -> Response:
        try:
            return self.route(req)
        except FhirError as err:
            return self.outcome(err)
        except BadRequest as exc:
            return self.outcome(FhirError(400, str(exc), issue="structure"))

    def route(self, req: Request) -> Response:
        """The interaction a FHIR request asks for; raises FhirError (or BadRequest) for any refusal."""
        rel = req.path[len(self.fhir_base_path) :].strip("/")
        parts = rel.split("/") if rel else []
        if not parts:
            if self._allow(req, "GET", "POST") == "GET":
                raise FhirError(404, "system-level search is not supported", issue="not-supported")
            return self.bundle(req)
        if parts == ["metadata"]:
            self._allow(req, "GET")
            return fhir_response(200, self.capability_statement())
        resource_type = parts[0]
        if resource_type not in R4_RESOURCE_TYPES:
            raise FhirError(404, f"unknown resource type {resource_type!r}", issue="not-supported")
        if len(parts) == 1:
            method = self._allow(req, "GET", "POST", "PUT", "DELETE")
            if method == "GET":
                return self.search(req, resource_type)
            if method == "POST":
                return self.create(req, resource_type)
            if method == "PUT":
                return self.conditional_update(req, resource_type)
            return self.conditional_delete(req, resource_type)
        resource_id = parts[1]
        if len(parts) == 2:
            method = self._allow(req, "GET", "PUT", "PATCH", "DELETE")
            if method == "GET":
                return self.read(req, resource_type, resource_id)
            if method == "PUT":
                return self.update(req, resource_type, resource_id)
            if method == "PATCH":
                return self.patch(req, resource_type, resource_id)
            return self.delete(req, resource_type, resource_id)
        if parts[2] == "_history" and len(parts) in (3, 4):
            self._allow(req, "GET")
            if len(parts) == 3:
                return self.history(req, resource_type, resource_id)
            return self.vread(req, resource_type, resource_id, parts[3])
        raise FhirError(404, f"no FHIR interaction at {req.path}", issue="not-found")

    @staticmethod
    def _allow(req: Request, *methods: str) -> str:
        if req.method not in methods:
            raise FhirError(
                405,
                f"{req.method} is not allowed here",
                issue="not-supported",
                headers={"Allow": ", ".join(methods)},
            )
        return req.method

    def refuse(self, message: str) -> Response:
        raise FhirError(405, message, issue="not-supported")

    # -- interactions: reads for everyone, writes refused unless a profile accepts them -------------
    def check_search(self, resource_type: str, query: dict[str, list[str]]) -> None:
        """Raises FhirError for searches the vendor refuses."""

    def search(self, req: Request, resource_type: str) -> Response:
        self.check_search(resource_type, req.query)
        spec = compile_search(req.query)
        matches = self.store.search(resource_type, spec.where)
        bundle = searchset(matches, spec, type_url=f"{self.fhir_base}/{resource_type}", query=req.query)
        return fhir_response(200, bundle)

    def read(self, req: Request, resource_type: str, resource_id: str) -> Response:
        resource = self.store.read(resource_type, resource_id)
        if resource is None:
            raise self.absent(resource_type, resource_id)
        return self.resource_response(resource)

    def vread(self, req: Request, resource_type: str, resource_id: str, version: str) -> Response:
        if not self.keeps_history:
            raise FhirError(405, "vread is not supported", issue="not-supported")
        resource = self.store.vread(resource_type, resource_id, version)
        if resource is None:
            raise FhirError(404, f"{resource_type}/{resource_id} has no version {version}", issue="not-found")
        if is_deletion(resource):
            raise FhirError(
                410, f"version {version} of {resource_type}/{resource_id} is its deletion", issue="deleted"
            )
        return self.resource_response(resource)

    def history(self, req: Request, resource_type: str, resource_id: str) -> Response:
        if not self.keeps_history:
            raise FhirError(405, "_history is not supported", issue="not-supported")
        versions = self.store.history(resource_type, resource_id)
        if not versions:
            raise self.not_found(resource_type, resource_id)
        url = f"{resource_type}/{resource_id}"
        entries = [
            _history_entry(version, versions[n + 1] if n + 1 < len(versions) else None, url, self.fhir_base)
            for n, version in enumerate(versions)
        ]
        bundle = {"resourceType": "Bundle", "type": "history", "total": len(versions), "entry": entries}
        return fhir_response(200, bundle)

    def create(self, req: Request, resource_type: str) -> Response:
        return self.refuse(f"create is not supported on {resource_type}")

    def update(self, req: Request, resource_type: str, resource_id: str) -> Response:
        return self.refuse(f"update is not supported on {resource_type}")

    def patch(self, req: Request, resource_type: str, resource_id: str) -> Response:
        return self.refuse(f"patch is not supported on {resource_type}")

    def delete(self, req: Request, resource_type: str, resource_id: str) -> Response:
        return self.refuse(f"delete is not supported on {resource_type}")

    def conditional_update(self, req: Request, resource_type: str) -> Response:
        return self.refuse(f"conditional update is not supported on {resource_type}")

    def conditional_delete(self, req: Request, resource_type: str) -> Response:
        return self.refuse(f"conditional delete is not supported on {resource_type}")

    def bundle(self, req: Request) -> Response:
        return self.refuse("batch and transaction are not supported")

    # -- helpers for the profiles' handlers --------------------------------------------------------
    def not_found(self, resource_type: str, resource_id: str) -> FhirError:
        return FhirError(404, f"{resource_type}/{resource_id} is not known", issue="not-found")

    def gone(self, resource_type: str, resource_id: str) -> FhirError:
        return FhirError(410, f"{resource_type}/{resource_id} was deleted", issue="deleted")

    def absent(self, resource_type: str, resource_id: str) -> FhirError:
        """410 for a deleted resource, 404 for one never stored."""
        if self.store.deleted(resource_type, resource_id) is not None:
            return self.gone(resource_type, resource_id)
        return self.not_found(resource_type, resource_id)

    def json_body(self, req: Request) -> Any:
        if req.content_type not in JSON_TYPES:
            raise FhirError(415, f"Content-Type {req.content_type!r} is not FHIR JSON", issue="not-supported")
        return req.json()

    def resource_body(self, req: Request, resource_type: str, *, resource_id: str = "") -> Resource:
        """The resource in a create/update body, after the checks every FHIR server makes."""
        resource = self.json_body(req)
        if not isinstance(resource, dict):
            raise FhirError(400, "the body must be a JSON object (a FHIR resource)", issue="structure")
        if resource.get("resourceType") != resource_type:
            raise FhirError(
                400,
                f"resourceType must be {resource_type!r}, got {resource.get('resourceType')!r}",
                issue="structure",
                expression=["resourceType"],
            )
        if resource_id and resource.get("id") != resource_id:
            raise FhirError(
                400,
                f"the body's id {resource.get('id')!r} does not match the URL id {resource_id!r}",
                issue="structure",
                expression=["id"],
            )
        if resource_id and not FHIR_ID.match(resource_id):
            raise FhirError(400, f"{resource_id!r} is not a valid FHIR id", issue="value", expression=["id"])
        if not isinstance(resource.get("meta", {}), dict):
            raise FhirError(422, "meta must be an object", issue="structure", expression=["meta"])
        check_structure(resource_type, resource)
        limit = self.sim.faults.note_limit()
        for note in resource.get("note") or [] if limit else []:
            # A server's field limit (fault `note_limit`): it keeps the start of the text, silently.
            if isinstance(note, dict) and isinstance(note.get("text"), str):
                note["text"] = note["text"][:limit]
        return resource

    def resource_response(self, resource: Resource, status: int = 200) -> Response:
        return fhir_response(status, resource, headers=self.version_headers(resource))

    def version_headers(self, resource: Resource) -> dict[str, str]:
        if not self.versioned:
            return {}
        return {
            "ETag": f'W/"{version_of(resource)}"',
            "Last-Modified": http_date(resource["meta"]["lastUpdated"]),
        }

    def unfaithful_answer(
        self, mode: str, resource: Resource, status: int, headers: dict[str, str]
    ) -> Response:
        """A write answered with something other than the stored resource (fault `write_answer`), as
        servers that ignore `Prefer` or answer carelessly do; the resource itself is stored as usual."""
        body: Any = copy.deepcopy(resource)
        if mode == "minimal":
            return Response(status, b"", headers)
        if mode == "outcome":
            body = operation_outcome("stored", issue="informational", severity="information")
        elif mode == "wrong_type":
            body["resourceType"] = "Basic" if resource["resourceType"] != "Basic" else "Observation"
        elif mode == "wrong_id":
            body["id"] = f"{resource['id']}-other"
        elif mode == "wrong_version":
            body["meta"]["versionId"] = str(int(version_of(resource)) + 1)
        elif mode == "no_location":
            headers = {k: v for k, v in headers.items() if k not in ("Location", "ETag")}
        return fhir_response(status, body, headers=headers)

    def write_response(self, req: Request, resource: Resource, status: int, *, location: bool) -> Response:
        """A write's answer: Location (creates) and ETag per the profile, body per `Prefer: return=`."""
        headers = self.version_headers(resource)
        if location:
            if not self.etag_on_create:
                headers.pop("ETag", None)
            path = f"{resource['resourceType']}/{resource['id']}"
            headers["Location"] = (
                f"{self.fhir_base}/{path}/_history/{version_of(resource)}" if self.absolute_location else path
            )
        wanted = prefer_return(req) or self.default_return
        if wanted == "representation" and (mode := self.sim.faults.write_answer()):
            return self.unfaithful_answer(mode, resource, status, headers)
        if wanted == "representation":
            return fhir_response(status, resource, headers=headers)
        if wanted == "OperationOutcome":
            done = "created" if status == 201 else "stored"
            message = f"{done} {resource['resourceType']}/{resource['id']}"
            return fhir_response(
                status,
                operation_outcome(message, issue="informational", severity="information"),
                headers=headers,
            )
        return Response(status, b"", headers)
