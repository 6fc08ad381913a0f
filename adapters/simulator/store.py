"""The simulator's one store: versioned FHIR resources with full history, shared by every API surface.

Stored dicts are never mutated once stored (every change stores a new dict), so readers may serialize them
outside the lock; only code that hands resources to callers outside the simulator copies them.

A delete stores a deletion version (a tombstone, see `is_deletion`) in the history and removes the resource
from the current set: reads, searches and conditional matches no longer see it, vread of earlier versions
still works, and an update without If-Match brings it back as the next version. `atomic()` makes several
writes one step that other threads never see half done and that is undone whole when it raises (a
transaction Bundle).
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Resource = dict[str, Any]
Predicate = Callable[[Resource], bool]
Key = tuple[str, str]  # (resource type, id)
# Marks a history entry as a deletion. Not a FHIR element name, so no stored resource can carry it.
DELETION_MARK = "(deleted)"


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


class Gone(NotFound):
    """The resource existed and was deleted: no current version to read, patch or match. A NotFound, so
    callers that do not care about deletions (the proprietary APIs, /_sim/edit) treat it as absent."""

    def __init__(self, tombstone: Resource) -> None:
        super().__init__(f"{tombstone['resourceType']}/{tombstone['id']} was deleted")
        self.tombstone = tombstone


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


def is_deletion(version: Resource) -> bool:
    """Whether a history entry records a delete (it carries no resource content)."""
    return version.get(DELETION_MARK) is True


def _stamped(resource: Resource, version: int) -> Resource:
    meta = {**(resource.get("meta") or {}), "versionId": str(version), "lastUpdated": now_instant()}
    head = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    return head | {k: v for k, v in resource.items() if k not in head}


class Store:
    def __init__(self) -> None:
        # Re-entrant: a transaction holds it across entries whose writes take it again.
        self._lock = threading.RLock()
        self._current: dict[str, dict[str, Resource]] = {}  # type -> id -> current version
        self._history: dict[Key, list[Resource]] = {}  # oldest first, deletions included
        # (type, identifier value) -> ids of current versions carrying it: identifier searches and
        # conditional creates stay fast however many resources drills store.
        self._by_identifier: dict[tuple[str, str], set[str]] = {}
        self._ids = itertools.count(1)
        # Inside atomic(): each key's current version and history before its first change there.
        self._journal: dict[Key, tuple[Resource | None, list[Resource] | None]] | None = None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Holds the lock for the block: a search and the one write it decides are a single step."""
        with self._lock:
            yield

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Holds the lock for the block; if the block raises, every write it made is undone."""
        with self._lock:
            if self._journal is not None:  # nested: the outermost block decides
                yield
                return
            self._journal = {}
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            finally:
                self._journal = None

    # -- reads -------------------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> Resource | None:
        with self._lock:
            return self._current.get(resource_type, {}).get(resource_id)

    def deleted(self, resource_type: str, resource_id: str) -> Resource | None:
        """The deletion version when the resource's latest version is a delete, else None."""
        with self._lock:
            versions = self._history.get((resource_type, resource_id))
            return versions[-1] if versions and is_deletion(versions[-1]) else None

    def vread(self, resource_type: str, resource_id: str, version: str) -> Resource | None:
        """That version, which may be a deletion (`is_deletion`)."""
        with self._lock:
            versions = self._history.get((resource_type, resource_id), [])
        return next((r for r in versions if version_of(r) == version), None)

    def history(self, resource_type: str, resource_id: str) -> list[Resource]:
        """Every version, newest first, deletions included."""
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
        """A server-assigned id that no resource of that type has, or had before it was deleted."""
        with self._lock:
            while True:
                candidate = make(next(self._ids))
                if (resource_type, candidate) not in self._history:
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
        If-Match was given (after a delete: as the next version, its history kept). `stale_first` bumps
        the version just before the check (a concurrent edit)."""
        resource_type, resource_id = resource["resourceType"], resource["id"]
        with self._lock:
            current = self._current.get(resource_type, {}).get(resource_id)
            if current is None:
                if if_match is not None:
                    raise self._absent(resource_type, resource_id)
                versions = self._history.get((resource_type, resource_id))
                stored = _stamped(resource, int(version_of(versions[-1])) + 1 if versions else 1)
                self._put(stored, fresh=not versions)
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
                raise self._absent(resource_type, resource_id)
            if stale_first:
                current = self._bump(current, dict(current))
            if if_match is not None and if_match != version_of(current):
                raise VersionConflict(current)
            changed = change(copy.deepcopy(current))
            return self._bump(current, {**changed, "resourceType": resource_type, "id": resource_id})

    def delete(
        self,
        resource_type: str,
        resource_id: str,
        *,
        if_match: str | None = None,
        stale_first: bool = False,
    ) -> Resource | None:
        """Records a deletion version and returns it; None when there was nothing current to delete
        (R4: deleting a deleted or unknown resource has no effect), unless If-Match asked for a version
        (then NotFound or Gone)."""
        key = (resource_type, resource_id)
        with self._lock:
            current = self._current.get(resource_type, {}).get(resource_id)
            if current is None:
                if if_match is not None:
                    raise self._absent(resource_type, resource_id)
                return None
            if stale_first:
                current = self._bump(current, dict(current))
            if if_match is not None and if_match != version_of(current):
                raise VersionConflict(current)
            meta = {"versionId": str(int(version_of(current)) + 1), "lastUpdated": now_instant()}
            tombstone = {"resourceType": resource_type, "id": resource_id, "meta": meta, DELETION_MARK: True}
            self._remember(key)
            self._unindex(current)
            del self._current[resource_type][resource_id]
            self._history[key].append(tombstone)
            return tombstone

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
    def _absent(self, resource_type: str, resource_id: str) -> Exception:
        versions = self._history.get((resource_type, resource_id))
        if versions and is_deletion(versions[-1]):
            return Gone(versions[-1])
        return NotFound(f"{resource_type}/{resource_id}")

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
        self._remember(key)
        by_id = self._current.setdefault(key[0], {})
        previous = by_id.get(key[1])
        if previous is not None:
            self._unindex(previous)
        self._index(stored)
        by_id[key[1]] = stored
        if fresh:
            self._history[key] = [stored]
        else:
            self._history.setdefault(key, []).append(stored)

    def _index(self, resource: Resource) -> None:
        for value in identifier_values(resource):
            self._by_identifier.setdefault((resource["resourceType"], value), set()).add(resource["id"])

    def _unindex(self, resource: Resource) -> None:
        for value in identifier_values(resource):
            self._by_identifier[(resource["resourceType"], value)].discard(resource["id"])

    def _remember(self, key: Key) -> None:
        """Inside atomic(): keeps the key's state from before the block's first change to it."""
        if self._journal is None or key in self._journal:
            return
        history = self._history.get(key)
        self._journal[key] = (
            self._current.get(key[0], {}).get(key[1]),
            list(history) if history is not None else None,
        )

    def _rollback(self) -> None:
        for key, (previous, history) in (self._journal or {}).items():
            by_id = self._current.setdefault(key[0], {})
            now = by_id.pop(key[1], None)
            if now is not None:
                self._unindex(now)
            if previous is not None:
                by_id[key[1]] = previous
                self._index(previous)
            if history is None:
                self._history.pop(key, None)
            else:
                self._history[key] = history
