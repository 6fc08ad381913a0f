"""Fault injection: which failure, if any, a request meets.

A spec is `key=value` pairs (see docs/wire-formats.md, "Fault spec"). Probabilities are drawn from one
`random.Random(seed)`, so a single client sending the same requests sees the same faults on every run.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PROBABILITIES = ("drop_connection", "error_5xx", "rate_limit", "stale_version", "timeout_after_commit")
# Deterministic quirks of a server's write answers (every FHIR write they apply to, no draw):
# `note_limit=N` stores at most N characters of each `note[*].text` (a vendor's field limit, as Epic's
# 450); `write_answer=MODE` answers a 200/201 write with something other than the stored resource.
WRITE_ANSWERS = ("minimal", "outcome", "wrong_type", "wrong_id", "wrong_version", "no_location")
KEYS = (*PROBABILITIES, "stall_seconds", "slow_ms", "maintenance", "seed", "note_limit", "write_answer")
DEFAULT_STALL_SECONDS = 30.0


@dataclass(frozen=True)
class FaultSettings:
    probabilities: dict[str, float] = field(default_factory=dict)
    stall_seconds: float = DEFAULT_STALL_SECONDS
    slow_ms: int = 0
    maintenance: tuple[float, float] | None = None  # epoch seconds [start, end)
    maintenance_spec: str = ""
    seed: int | None = None
    note_limit: int = 0  # 0: notes kept whole
    write_answer: str = ""  # "": the stored resource, per Prefer

    def as_spec(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.probabilities.items()]
        if self.note_limit:
            parts.append(f"note_limit={self.note_limit}")
        if self.write_answer:
            parts.append(f"write_answer={self.write_answer}")
        if "timeout_after_commit" in self.probabilities:
            parts.append(f"stall_seconds={self.stall_seconds:g}")
        if self.slow_ms:
            parts.append(f"slow_ms={self.slow_ms}")
        if self.maintenance_spec:
            parts.append(f"maintenance={self.maintenance_spec}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return ",".join(parts)


def _instant(text: str, now: float) -> float:
    """Seconds from now (`30`) or an ISO time (`2026-11-24T10:00:00Z`) -> epoch seconds."""
    try:
        return now + float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(f"maintenance time {text!r} needs a timezone")
        return moment.timestamp()


def _pairs(spec: str | dict[str, Any]) -> dict[str, str]:
    if isinstance(spec, dict):
        if "spec" in spec:
            return _pairs(str(spec["spec"]))
        return {str(k): str(v) for k, v in spec.items()}
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault {item!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs


def _number(pairs: dict[str, str], key: str, default: str, kind: type[float] | type[int] = float) -> float:
    try:
        return kind(pairs.get(key, default))
    except ValueError:
        raise ValueError(f"{key} must be a number, got {pairs[key]!r}")


def parse_fault_spec(spec: str | dict[str, Any] | None) -> FaultSettings:
    """Parses a spec string or dict; raises ValueError naming the bad part."""
    now = time.time()
    pairs = _pairs(spec or "")
    unknown = sorted(set(pairs) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    probabilities: dict[str, float] = {}
    for key in PROBABILITIES:
        if key in pairs:
            p = _number(pairs, key, "0")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{key} must be a probability between 0 and 1, got {pairs[key]}")
            probabilities[key] = p
    maintenance = None
    if "maintenance" in pairs:
        start, sep, end = pairs["maintenance"].partition("..")
        if not sep:
            raise ValueError("maintenance takes START..END (seconds from now, or ISO times)")
        maintenance = (_instant(start, now), _instant(end, now))
        if maintenance[1] <= maintenance[0]:
            raise ValueError("maintenance must end after it starts")
    write_answer = pairs.get("write_answer", "")
    if write_answer and write_answer not in WRITE_ANSWERS:
        raise ValueError(f"write_answer must be one of {', '.join(WRITE_ANSWERS)}, got {write_answer!r}")
    note_limit = int(_number(pairs, "note_limit", "0", int))
    if note_limit < 0:
        raise ValueError("note_limit must not be negative")
    stall = _number(pairs, "stall_seconds", str(DEFAULT_STALL_SECONDS))
    slow_ms = int(_number(pairs, "slow_ms", "0", int))
    if stall < 0 or slow_ms < 0:
        raise ValueError("stall_seconds and slow_ms must not be negative")
    return FaultSettings(
        probabilities=probabilities,
        stall_seconds=stall,
        slow_ms=slow_ms,
        maintenance=maintenance,
        maintenance_spec=pairs.get("maintenance", ""),
        seed=int(_number(pairs, "seed", "0", int)) if "seed" in pairs else None,
        note_limit=note_limit,
        write_answer=write_answer,
    )


@dataclass
class FaultPlan:
    """What happens to one request, decided before it is served."""

    slow_seconds: float = 0.0
    maintenance_retry_after: int | None = None
    drop_connection: bool = False
    error_status: int | None = None  # 500 or 502
    rate_limit: bool = False
    stale_version: bool = False
    stall_seconds: float = 0.0


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = FaultSettings()
        self._random = random.Random()
        self._fired: Counter[str] = Counter()

    def configure(self, spec: str | dict[str, Any] | None) -> FaultSettings:
        settings = parse_fault_spec(spec)
        with self._lock:
            self._settings = settings
            self._random = random.Random(settings.seed)
            self._fired = Counter()
        return settings

    def clear(self) -> None:
        self.configure(None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            settings, fired = self._settings, dict(self._fired)
        configured = [*settings.probabilities, *(["slow_ms"] if settings.slow_ms else [])]
        configured += ["maintenance"] if settings.maintenance else []
        configured += [k for k in ("note_limit", "write_answer") if getattr(settings, k)]
        return {
            "spec": settings.as_spec(),
            "settings": {
                **settings.probabilities,
                "stall_seconds": settings.stall_seconds,
                "slow_ms": settings.slow_ms,
                "maintenance": settings.maintenance_spec or None,
                "seed": settings.seed,
                "note_limit": settings.note_limit,
                "write_answer": settings.write_answer or None,
            },
            "fired": {name: fired.get(name, 0) for name in configured},
        }

    def plan(self, *, has_if_match: bool) -> FaultPlan:
        """Draws this request's faults, in a fixed order, and counts the ones that fire."""
        plan = FaultPlan()
        with self._lock:
            s = self._settings
            if s.slow_ms:
                plan.slow_seconds = s.slow_ms / 1000
                self._fired["slow_ms"] += 1
            if s.maintenance and s.maintenance[0] <= time.time() < s.maintenance[1]:
                plan.maintenance_retry_after = max(1, math.ceil(s.maintenance[1] - time.time()))
                self._fired["maintenance"] += 1
                return plan
            if self._fires("drop_connection"):
                plan.drop_connection = True
            elif self._fires("error_5xx"):
                plan.error_status = self._random.choice((500, 502))
            elif self._fires("rate_limit"):
                plan.rate_limit = True
            else:
                plan.stale_version = has_if_match and self._fires("stale_version")
                if self._fires("timeout_after_commit"):
                    plan.stall_seconds = s.stall_seconds
        return plan

    def note_limit(self) -> int:
        """How many characters of a note's text a write stores (0: all); counted when it applies."""
        with self._lock:
            limit = self._settings.note_limit
            if limit:
                self._fired["note_limit"] += 1
        return limit

    def write_answer(self) -> str:
        """How a 200/201 write is answered instead of with the stored resource ("" : as asked)."""
        with self._lock:
            mode = self._settings.write_answer
            if mode:
                self._fired["write_answer"] += 1
        return mode

    def _fires(self, name: str) -> bool:
        p = self._settings.probabilities.get(name, 0.0)
        if p <= 0.0 or self._random.random() >= p:
            return False
        self._fired[name] += 1
        return True
