"""Operator time zones: any IANA zone, kept per user, detected from the browser when none is set."""

import zoneinfo
from functools import cache
from typing import Any

from console.models import OperatorPreference


@cache
def all_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_zone(name: str | None) -> bool:
    return bool(name) and name in all_zones()


def zone_choices() -> list[tuple[str, Any]]:
    """UTC first, then the zones grouped by region ("America", "Europe", ...) for a long select."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(all_zones()):
        if "/" not in name or name.startswith(("Etc/", "SystemV/", "US/", "Canada/", "Brazil/", "Mexico/")):
            continue  # aliases and legacy names: one canonical entry per place is enough
        region, place = name.split("/", 1)
        groups.setdefault(region, []).append((name, place.replace("_", " ").replace("/", " / ")))
    return [("UTC", "UTC"), *sorted(groups.items())]


def stored_zone(user: Any) -> str | None:
    """The zone the operator has (one query), or None when they never set one."""
    if not getattr(user, "is_authenticated", False):
        return None
    return OperatorPreference.objects.filter(user_id=user.pk).values_list("time_zone", flat=True).first()


def preference_of(user: Any) -> OperatorPreference | None:
    return OperatorPreference.objects.filter(user_id=user.pk).first()


def save_zone(user: Any, name: str) -> OperatorPreference:
    """The operator's own choice: replaces whatever was set (detected or chosen)."""
    if not is_zone(name):
        raise ValueError(f"unknown time zone {name!r}")
    pref, _ = OperatorPreference.objects.update_or_create(
        user=user, defaults={"time_zone": name, "detected": False}
    )
    return pref


def detect_zone(user: Any, name: str) -> tuple[str, bool]:
    """The browser's zone, taken only when the operator has none: never overrides a choice.
    Returns (the zone now in effect, whether the detected one was stored)."""
    if not is_zone(name):
        raise ValueError(f"unknown time zone {name!r}")
    pref, created = OperatorPreference.objects.get_or_create(
        user=user, defaults={"time_zone": name, "detected": True}
    )
    return pref.time_zone, created
