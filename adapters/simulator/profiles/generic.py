"""generic: a spec-correct FHIR R4 server (conditional create, If-Match, JSON Patch, history)."""

from __future__ import annotations

from urllib.parse import parse_qs

from ..json_patch import PatchError, apply_patch
from ..messages import Request, Response
from ..outcomes import FhirError
from ..search import compile_search
from ..store import MultipleMatches, NotFound, Resource, VersionConflict, version_of
from .base import Profile, check_structure, if_match_version

JSON_PATCH = "application/json-patch+json"


def conflict(exc: VersionConflict) -> FhirError:
    return FhirError(
        412,
        f"version conflict: the current version is {version_of(exc.current)}",
        issue="conflict",
        headers={"ETag": f'W/"{version_of(exc.current)}"'},
    )


class GenericProfile(Profile):
    name = "generic"

    def create(self, req: Request, resource_type: str) -> Response:
        resource = self.resource_body(req, resource_type)
        resource.pop("id", None)  # the server assigns ids on create
        where = None
        condition = req.header("if-none-exist").strip().lstrip("?")
        if condition:
            query = parse_qs(condition)
            if not query:
                raise FhirError(400, f"If-None-Exist {condition!r} is not a search query", issue="invalid")
            where = compile_search(query).where
        try:
            stored, created = self.store.create(
                resource, resource_id=self.store.new_id(resource_type), if_none_exist=where
            )
        except MultipleMatches as exc:
            raise FhirError(412, f"If-None-Exist matches {exc.count} resources", issue="duplicate")
        return self.write_response(req, stored, 201 if created else 200, location=True)

    def update(self, req: Request, resource_type: str, resource_id: str) -> Response:
        resource = self.resource_body(req, resource_type, resource_id=resource_id)
        try:
            stored, created = self.store.update(
                resource, if_match=if_match_version(req), stale_first=req.stale_version
            )
        except VersionConflict as exc:
            raise conflict(exc)
        except NotFound:
            raise self.not_found(resource_type, resource_id)
        return self.write_response(req, stored, 201 if created else 200, location=created)

    def patch(self, req: Request, resource_type: str, resource_id: str) -> Response:
        if req.content_type != JSON_PATCH:
            raise FhirError(415, f"PATCH takes {JSON_PATCH}, not {req.content_type!r}", issue="not-supported")
        operations = req.json()

        def change(current: Resource) -> Resource:
            try:
                patched = apply_patch(current, operations)
            except PatchError as exc:
                raise FhirError(422, f"the patch cannot be applied: {exc}", issue="processing")
            if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
                raise FhirError(422, "a patch must not change resourceType or id", issue="processing")
            check_structure(resource_type, patched)
            return patched

        try:
            stored = self.store.modify(
                resource_type,
                resource_id,
                change,
                if_match=if_match_version(req),
                stale_first=req.stale_version,
            )
        except VersionConflict as exc:
            raise conflict(exc)
        except NotFound:
            raise self.not_found(resource_type, resource_id)
        return self.write_response(req, stored, 200, location=False)
