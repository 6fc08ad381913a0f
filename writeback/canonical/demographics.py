"""demographics.updated: changes to a patient's contact details (and, refused later by the contract,
to the demographics the EHR owns).

name, birth_date, gender and identifier are accepted here on purpose: the contract matrix decides
what may be written and refuses them with `field-not-writable`, which tells the client more than a
schema error would.
"""

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from writeback.canonical.base import DataModel
from writeback.canonical.fields import FhirDate, NameText, Text, Uri, VersionId, invalid, string

_PHONE_SEPARATORS = re.compile(r"[\s.\-()/]")
_PHONE = re.compile(r"^\+?[0-9]{3,20}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_LIKE = frozenset({"phone", "fax", "pager", "sms"})


def normalize_phone(value: str) -> str:
    """Visual separators removed, digits and a leading + kept: "+1 555 0100" -> "+15550100".

    Nothing is added: a number without a country code stays without one, since adding one would
    be a guess. An extension (x123) is not a dialable number and is refused.
    """
    compact = _PHONE_SEPARATORS.sub("", value)
    if not _PHONE.match(compact):
        raise invalid("is not a phone number (digits, an optional leading +, and separators)")
    return compact


class ContactPoint(DataModel):
    system: Literal["phone", "fax", "email", "pager", "url", "sms", "other"]
    value: string(256)
    use: Literal["home", "work", "temp", "old", "mobile"] | None = None

    @field_validator("value")
    @classmethod
    def _normalize(cls, value: str, info: ValidationInfo) -> str:
        system = info.data.get("system")
        if system in _PHONE_LIKE:
            return normalize_phone(value)
        if system == "email":
            if not _EMAIL.match(value):
                raise invalid("is not an email address")
            local, _, domain = value.rpartition("@")
            return f"{local}@{domain.lower()}"  # domains are case-insensitive, local parts are not
        return value


class Address(DataModel):
    use: Literal["home", "work", "temp", "old", "billing"] | None = None
    type: Literal["postal", "physical", "both"] | None = None
    text: Text | None = None
    line: list[NameText] | None = Field(default=None, min_length=1, max_length=10)
    city: NameText | None = None
    district: NameText | None = None
    state: NameText | None = None
    postal_code: string(20) | None = None  # a string: ZIP codes keep their leading zeros
    country: NameText | None = None

    @model_validator(mode="after")
    def _not_blank(self) -> Any:
        if not any(
            (self.text, self.line, self.city, self.district, self.state, self.postal_code, self.country)
        ):
            raise PydanticCustomError("invalid-value", "an address needs at least one part")
        return self


class HumanName(DataModel):
    use: Literal["usual", "official", "temp", "nickname", "anonymous", "old", "maiden"] | None = None
    text: NameText | None = None
    family: NameText | None = None
    given: list[NameText] | None = Field(default=None, min_length=1, max_length=10)
    prefix: list[NameText] | None = Field(default=None, min_length=1, max_length=5)
    suffix: list[NameText] | None = Field(default=None, min_length=1, max_length=5)

    @model_validator(mode="after")
    def _not_blank(self) -> Any:
        if not (self.text or self.family or self.given):
            raise PydanticCustomError("invalid-value", "a name needs a text, a family or a given name")
        return self


class Identifier(DataModel):
    system: Uri
    value: string(200)
    use: Literal["usual", "official", "temp", "secondary", "old"] | None = None


# Canonical field -> FHIR Patient element, in the order writes list them.
FHIR_ELEMENTS = {
    "telecom": "telecom",
    "address": "address",
    "name": "name",
    "birth_date": "birthDate",
    "gender": "gender",
    "identifier": "identifier",
}


class DemographicsData(DataModel):
    base_version: VersionId  # the Patient version the change was made on (If-Match)
    telecom: list[ContactPoint] | None = Field(default=None, min_length=1, max_length=20)
    address: list[Address] | None = Field(default=None, min_length=1, max_length=10)
    name: list[HumanName] | None = Field(default=None, min_length=1, max_length=10)
    birth_date: FhirDate | None = None
    gender: Literal["male", "female", "other", "unknown"] | None = None
    identifier: list[Identifier] | None = Field(default=None, min_length=1, max_length=20)

    @model_validator(mode="after")
    def _something_to_write(self) -> Any:
        if not self.touched():
            raise PydanticCustomError(
                "nothing-to-write", "the event changes nothing: give telecom, address or another field"
            )
        return self

    def touched(self) -> list[str]:
        """The canonical fields this event changes."""
        return [name for name in FHIR_ELEMENTS if getattr(self, name) is not None]
