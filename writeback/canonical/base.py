"""The base of every canonical data model."""

from pydantic import BaseModel, ConfigDict


class DataModel(BaseModel):
    """Event data: unknown fields are errors, because a misspelt field would otherwise be dropped
    silently and the chart would miss what the clinician entered."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class EnvelopeModel(BaseModel):
    """Envelope parts: unknown fields are tolerated (reported as warnings by `canonicalize`)."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)
