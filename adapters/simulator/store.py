"""The simulator's one store: versioned FHIR resources with full history, shared by every API surface.

Stored dicts are never mutated once stored (every change stores a new dict), so readers may serialize them
outside the lock; only code that hands resources to callers outside the simulator copies them.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Resource = dict[str, Any]
Predicate = Callable[[Resource], bool]


@dataclass(frozen=True)
class Filter:
    """Which resources of a type a search or a conditional create matches. `identifier_values`, when
    given, narrows the candidates through the identifier index before `predicate` decides."""

    predicate: Predicate
    identifier_values: frozenset[str] | None = None


def identifiers_of(resource: Resource) -> list[dict[str, Any]]:
    """The resource's Identifiers: a list on most types, a single one on a few (QuestionnaireResponse...)."""
    identifiers = resource.get("identifier") or []
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    return [i for i in identifiers if isinstance(i, dict)] if isinstance(identifiers, list) else []


def identifier_values(resource: Resource) -> set[str]:
    return {i["value"] for i in identifiers_of(resource) if isinstance(i.get("value"), str)}


class NotFound(Exception):
    pass


class VersionConflict(Exception):
    def __init__(self, current: Resource) -> None:
        super().__init__(f"version {version_of(current)} is current")
        self.current = current


class MultipleMatches(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(f"{count} resources match")
        self.count = count


def now_instant() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def version_of(resource: Resource) -> str:
    return str(resource.get("meta", {}).get("versionId", ""))


def _stamped(resource: Resource, version: int) -> Resource:
    meta = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": now_instant()}
    head = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    return head | {k: v for k, v in resource.items() if k not in head}


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, dict[str, Resource]] = {}  # type -> id -> current version
        self._history: dict[tuple[str, str], list[Resource]] = {}  # oldest first
        # (type, identifier value) -> ids of current versions carrying it: identifier searches and
        # conditional creates stay fast however many resources drills store.
        self._by_identifier: dict[tuple[str, str], set[str]] = {}
        self._ids = itertools.count(1)

    # -- reads -------------------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> Resource | None:
        with self._lock:
            return self._current.get(resource_type, {}).get(resource_id)

    def vread(self, resource_type: str, resource_id: str, version: str) -> Resource | None:
        with self._lock:
            versions = self._history.get((resource_type, resource_id), [])
        return next((r for r in versions if version_of(r) == version), None)

    def history(self, resource_type: str, resource_id: str) -> list[Resource]:
        """Every version, newest first."""
        with self._lock:
            return list(reversed(self._history.get((resource_type, resource_id), [])))

    def search(self, resource_type: str, where: Filter) -> list[Resource]:
        with self._lock:
            candidates = self._candidates(resource_type, where)
        return [r for r in candidates if where.predicate(r)]

    def all_current(self, resource_type: str | None = None) -> list[Resource]:
        with self._lock:
            if resource_type is not None:
                return list(self._current.get(resource_type, {}).values())
            return [r for by_id in self._current.values() for r in by_id.values()]

    def types(self) -> list[str]:
        with self._lock:
            return [t for t, by_id in self._current.items() if by_id]

    def count(self) -> int:
        with self._lock:
            return sum(len(by_id) for by_id in self._current.values())

    # -- writes ------------------------------------------------------------------------------------
    def new_id(self, resource_type: str, make: Callable[[int], str] = str) -> str:
        """A server-assigned id that no stored resource of that type has."""
        with self._lock:
            taken = self._current.get(resource_type, {})
            while True:
                candidate = make(next(self._ids))
                if candidate not in taken:
                    return candidate

    def create(
        self, resource: Resource, *, resource_id: str, if_none_exist: Filter | None = None
    ) -> tuple[Resource, bool]:
        """Stores version 1. With `if_none_exist`, the match check and the insert are one atomic step:
        one match -> (that resource, False); several -> MultipleMatches."""
        resource_type = resource["resourceType"]
        with self._lock:
            by_id = self._current.setdefault(resource_type, {})
            if if_none_exist is not None:
                candidates = self._candidates(resource_type, if_none_exist)
                matches = [r for r in candidates if if_none_exist.predicate(r)]
                if len(matches) > 1:
                    raise MultipleMatches(len(matches))
                if matches:
                    return matches[0], False
            stored = _stamped(resource | {"id": resource_id}, 1)
            self._put(stored, fresh=resource_id not in by_id)
            return stored, True

    def update(
        self, resource: Resource, *, if_match: str | None = None, stale_first: bool = False
    ) -> tuple[Resource, bool]:
        """Stores a new version of `resource` (its id is in the body); creates it when absent and no
        If-Match was given. `stale_first` bumps the version just before the check (a concurrent edit)."""
        resource_type, resource_id = resource["resourceType"], resource["id"]
        with self._lock:
            current = self._current.get(resource_type, {}).get(resource_id)
            if current is None:
                if if_match is not None:
                    raise NotFound(f"{resource_type}/{resource_id}")
                stored = _stamped(resource, 1)
                self._put(stored, fresh=True)
                return stored, True
            if stale_first:
                current = self._bump(current, dict(current))
            if if_match is not None and if_match != version_of(current):
                raise VersionConflict(current)
            return self._bump(current, resource), False

    def modify(
        self,
        resource_type: str,
        resource_id: str,
        change: Callable[[Resource], Resource],
        *,
        if_match: str | None = None,
        stale_first: bool = False,
    ) -> Resource:
        """Applies `change` to a private copy of the current version and stores the result as the next
        version. `change` may raise; nothing is stored then."""
        with self._lock:
            current = self._current.get(resource_type, {}).get(resource_id)
            if current is None:
                raise NotFound(f"{resource_type}/{resource_id}")
            if stale_first:
                current = self._bump(current, dict(current))
            if if_match is not None and if_match != version_of(current):
                raise VersionConflict(current)
            changed = change(copy.deepcopy(current))
            return self._bump(current, {**changed, "resourceType": resource_type, "id": resource_id})

    def seed(self, resources: Iterable[Resource]) -> int:
        """Stores each resource as version 1 with a fresh history (replacing any with the same id)."""
        count = 0
        with self._lock:
            for resource in resources:
                self._put(_stamped(copy.deepcopy(resource), 1), fresh=True)
                count += 1
        return count

    def reset(self) -> None:
        with self._lock:
            self._current.clear()
            self._history.clear()
            self._by_identifier.clear()

    # -- internals (lock held) ---------------------------------------------------------------------
    def _candidates(self, resource_type: str, where: Filter) -> list[Resource]:
        by_id = self._current.get(resource_type, {})
        if where.identifier_values is None:
            return list(by_id.values())
        ids = set().union(*(self._by_identifier.get((resource_type, v), ()) for v in where.identifier_values))
        return sorted((by_id[i] for i in ids), key=lambda r: (r["meta"]["lastUpdated"], r["id"]))

    def _bump(self, current: Resource, new: Resource) -> Resource:
        stored = _stamped(new, int(version_of(current) or 0) + 1)
        self._put(stored, fresh=False)
        return stored

    def _put(self, stored: Resource, *, fresh: bool) -> None:
        key = (stored["resourceType"], stored["id"])
        by_id = self._current.setdefault(key[0], {})
        previous = by_id.get(key[1])
        for value in identifier_values(previous) if previous else ():
            self._by_identifier[(key[0], value)].discard(key[1])
        for value in identifier_values(stored):
            self._by_identifier.setdefault((key[0], value), set()).add(key[1])
        by_id[key[1]] = stored
        if fresh:
            self._history[key] = [stored]
        else:
            self._history.setdefault(key, []).append(stored)
