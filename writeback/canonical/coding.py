"""A coded value: system (canonical URI), code, display."""

import re
from typing import Any

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from writeback.canonical import codes
from writeback.canonical.base import DataModel
from writeback.canonical.fields import Text, string

# FHIR's `code` datatype: tokens separated by single spaces (no tabs, line breaks or runs of blanks).
_CODE_TOKENS = re.compile(r"[^\s]+( [^\s]+)*")


class Coding(DataModel):
    system: Text
    code: string(64)
    display: Text | None = None

    @field_validator("system")
    @classmethod
    def _known_system(cls, value: str) -> str:
        uri = codes.system_uri(value)
        if uri is None:
            raise PydanticCustomError(
                "unknown-code-system",
                "'{name}' is not a code system we know (SNOMED CT, LOINC, RxNorm, ICD-10-CM)",
                {"name": value},
            )
        return uri

    @field_validator("code")
    @classmethod
    def _code_token(cls, value: str) -> str:
        if not _CODE_TOKENS.fullmatch(value):
            raise PydanticCustomError(
                "invalid-code", "a code is one or more tokens separated by single spaces, no line breaks"
            )
        return value

    @model_validator(mode="after")
    def _canonical_code(self) -> Any:
        self.code = codes.normalize_code(self.system, self.code)
        return self
