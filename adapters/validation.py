"""A last structural check before anything leaves: the resource handed to an adapter must be valid FHIR
R4 (fhir.resources, R4B models), whatever the vendor would make of it. Malformed data is refused with
the reason, before a request is sent, so no vendor ever stores half of it."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

# Resources already found valid, by their JSON text: intake validates what the mapping produced and the
# adapter's preflight checks it again, as does the worker before sending; validation costs ~1 ms, the
# lookup a few microseconds.
_VALID: OrderedDict[str, None] = OrderedDict()
_VALID_MAX = 4096
_lock = threading.Lock()


def structure_problem(resource: dict[str, Any] | None) -> str | None:
    """Why `resource` is not a valid FHIR R4 resource, or None."""
    if not isinstance(resource, dict) or not resource.get("resourceType"):
        return "the payload is not a FHIR resource (no resourceType)"
    try:
        key = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _VALID:
        return None
    problem = _validate(resource)
    if problem is None and key is not None:
        with _lock:
            _VALID[key] = None
            if len(_VALID) > _VALID_MAX:
                _VALID.popitem(last=False)
    return problem


@cache
def _model_class(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)  # an import lookup each call otherwise


def _validate(resource: dict[str, Any]) -> str | None:
    try:
        model = _model_class(str(resource["resourceType"]))
    except KeyError:
        return f"{resource['resourceType']!r} is not a FHIR R4 resource type"
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or resource['resourceType']}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        return "malformed FHIR: " + "; ".join(problems[:3])
    except (TypeError, ValueError) as exc:  # fhir.resources raises plain errors for some shapes
        return f"malformed FHIR: {exc}"
    return None
