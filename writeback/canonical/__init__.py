"""The canonical model: one pydantic model per event type, and `canonicalize` to read events into it.

Everything here is pure (no database): the API, the console and the tests call it the same way.
"""

from writeback.canonical.envelope import DATA_MODELS, EVENT_TYPES, CanonicalEvent
from writeback.canonical.parsing import CanonicalResult, canonicalize

__all__ = ["DATA_MODELS", "EVENT_TYPES", "CanonicalEvent", "CanonicalResult", "canonicalize"]
