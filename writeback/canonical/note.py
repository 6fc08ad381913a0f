"""note.signed: a signed clinical note."""

from pydantic import field_validator

from writeback.canonical.base import DataModel
from writeback.canonical.coding import Coding
from writeback.canonical.fields import RawText, Text, string


class NoteData(DataModel):
    title: Text | None = None
    type: Coding
    content_type: string(100)
    text: RawText  # kept exactly as signed; emptiness is a domain rule (empty-note)
    amends: string(200) | None = None  # what this note supersedes (resolved to a write by the caller)

    @field_validator("content_type")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()
