"""Vendor profiles: how the simulator behaves as each EHR."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .athena import AthenaProfile
from .base import Profile
from .epic import EpicProfile
from .generic import GenericProfile
from .veradigm import VeradigmProfile

if TYPE_CHECKING:
    from ..app import Simulator

PROFILES: dict[str, type[Profile]] = {
    "generic": GenericProfile,
    "epic": EpicProfile,
    "athena": AthenaProfile,
    "veradigm": VeradigmProfile,
}


def make_profile(name: str, sim: Simulator) -> Profile:
    try:
        profile_class = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return profile_class(sim)
