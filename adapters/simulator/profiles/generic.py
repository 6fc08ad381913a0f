"""generic: a spec-correct FHIR R4 server (conditional create, update and delete, If-Match, JSON Patch,
delete, history, transaction and batch Bundles)."""

from __future__ import annotations

from urllib.parse import parse_qs

from ..bundles import process_bundle
from ..json_patch import PatchError, apply_patch
from ..messages import Request, Response
from ..outcomes import FhirError
from ..search import criteria
from ..store import Filter, Gone, MultipleMatches, NotFound, Resource, VersionConflict, version_of
from .base import FHIR_ID, Profile, check_structure, if_match_version, prefer_return

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
            where = criteria(parse_qs(condition, keep_blank_values=True), "If-None-Exist")
        resource_id = req.assigned_id or self.store.new_id(resource_type)
        try:
            stored, created = self.store.create(resource, resource_id=resource_id, if_none_exist=where)
        except MultipleMatches as exc:
            raise FhirError(412, f"If-None-Exist matches {exc.count} resources", issue="duplicate")
        return self.write_response(req, stored, 201 if created else 200, location=True)

    def update(self, req: Request, resource_type: str, resource_id: str) -> Response:
        resource = self.resource_body(req, resource_type, resource_id=resource_id)
        stored, created = self._store(req, resource)
        return self.write_response(req, stored, 201 if created else 200, location=created)

    def conditional_update(self, req: Request, resource_type: str) -> Response:
        """`PUT Type?criteria` (R4): no match creates (with the body's id, else a new one), one match is
        updated (If-Match honoured), several are 412. Search and write are one atomic step."""
        where = criteria(req.query, "conditional update")
        resource = self.resource_body(req, resource_type)
        body_id = resource.get("id")
        if body_id is not None and not (isinstance(body_id, str) and FHIR_ID.match(body_id)):
            raise FhirError(400, f"{body_id!r} is not a valid FHIR id", issue="value", expression=["id"])
        with self.store.exclusive():
            target = self.only_match(resource_type, where, "conditional update")
            if target is not None and body_id and body_id != target["id"]:
                raise FhirError(
                    400,
                    f"the body's id {body_id!r} is not the id of the matching resource ({target['id']!r})",
                    issue="invalid",
                    expression=["id"],
                )
            if target is None and if_match_version(req) is not None:
                raise FhirError(
                    412, "If-Match was sent but no resource matches the criteria", issue="conflict"
                )
            if target is None and body_id and self.store.read(resource_type, body_id) is not None:
                raise FhirError(
                    400,
                    f"{resource_type}/{body_id} exists but does not match the criteria",
                    issue="invalid",
                    expression=["id"],
                )
            resource_id = (
                target["id"] if target else body_id or req.assigned_id or self.store.new_id(resource_type)
            )
            stored, created = self._store(req, resource | {"id": resource_id})
        return self.write_response(req, stored, 201 if created else 200, location=True)

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
        except Gone:
            raise self.gone(resource_type, resource_id)
        except NotFound:
            raise self.not_found(resource_type, resource_id)
        return self.write_response(req, stored, 200, location=False)

    def delete(self, req: Request, resource_type: str, resource_id: str) -> Response:
        """204 whether or not there was anything to delete (R4); If-Match makes it version-aware."""
        try:
            tombstone = self.store.delete(
                resource_type, resource_id, if_match=if_match_version(req), stale_first=req.stale_version
            )
        except VersionConflict as exc:
            raise conflict(exc)
        except Gone:
            raise self.gone(resource_type, resource_id)
        except NotFound:
            raise self.not_found(resource_type, resource_id)
        return Response(204, b"", {"ETag": f'W/"{version_of(tombstone)}"'} if tombstone else {})

    def conditional_delete(self, req: Request, resource_type: str) -> Response:
        """`DELETE Type?criteria`, single-resource (R4 `conditionalDelete: single`): no match or one match
        is an ordinary delete, several are 412."""
        where = criteria(req.query, "conditional delete")
        with self.store.exclusive():
            target = self.only_match(resource_type, where, "conditional delete")
            if target is None:
                if if_match_version(req) is not None:
                    raise FhirError(
                        412, "If-Match was sent but no resource matches the criteria", issue="conflict"
                    )
                return Response(204)
            return self.delete(req, resource_type, target["id"])

    def bundle(self, req: Request) -> Response:
        return process_bundle(self, req, self.json_body(req), prefer_return(req) or self.default_return)

    # -- helpers -----------------------------------------------------------------------------------
    def _store(self, req: Request, resource: Resource) -> tuple[Resource, bool]:
        """A PUT's write: If-Match checked; an absent resource is created (a deleted one brought back as
        its next version) unless If-Match was sent."""
        resource_type, resource_id = resource["resourceType"], resource["id"]
        try:
            return self.store.update(resource, if_match=if_match_version(req), stale_first=req.stale_version)
        except VersionConflict as exc:
            raise conflict(exc)
        except Gone:
            raise self.gone(resource_type, resource_id)
        except NotFound:
            raise self.not_found(resource_type, resource_id)

    def only_match(
        self, resource_type: str, where: Filter, what: str, *, issue: str = "multiple-matches"
    ) -> Resource | None:
        """The one resource conditional criteria match, None for none; several are 412 (R4)."""
        matches = self.store.search(resource_type, where)
        if len(matches) > 1:
            raise FhirError(412, f"{what} matches {len(matches)} resources", issue=issue)
        return matches[0] if matches else None
