"""Does the stored resource hold exactly what we meant? Our intended FHIR resource (what the mapping
produced, before any vendor translation) against what the simulator stores, field by field.

Every difference must be one the adapter declares (`VendorAdapter.wire_losses()`, docs/vendors.md);
server bookkeeping (`id`, `meta`, `text`) is left out, and a dateTime stored in another offset counts
as the same value when it names the same instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import VendorAdapter, WireLoss
from adapters.fhir_rest import same_instant
from writeback.diffs import flatten

_MISSING = object()


@dataclass(frozen=True)
class Difference:
    path: str
    kind: str  # dropped | changed | added
    intended: Any
    stored: Any


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, str) and isinstance(b, str) and "T" in a and "T" in b:
        return a == b or same_instant(a, b)
    return a == b


def differences(
    intended: dict[str, Any], stored: dict[str, Any], fields: list[str] | None = None
) -> list[Difference]:
    """Every leaf that was dropped, changed or added; limited to `fields` (top-level elements) when
    given: an update owns only the elements it writes, the rest of the chart is the EHR's."""

    def keep(path: str) -> bool:
        return fields is None or path.split(".")[0].split("[")[0] in fields

    ours = {p: v for p, v in flatten(intended).items() if keep(p)}
    theirs = {p: v for p, v in flatten(stored).items() if keep(p)}
    out = []
    for path, value in ours.items():
        got = theirs.get(path, _MISSING)
        if got is _MISSING:
            out.append(Difference(path, "dropped", value, None))
        elif not _same(value, got):
            out.append(Difference(path, "changed", value, got))
    out += [Difference(p, "added", None, v) for p, v in theirs.items() if p not in ours]
    return out


def declared_for(adapter: VendorAdapter, resource_type: str) -> tuple[WireLoss, ...]:
    return adapter.wire_losses().get(resource_type, ())


def undeclared(
    adapter: VendorAdapter, found: list[Difference], resource_type: str, used: set[WireLoss]
) -> list[Difference]:
    """The differences no declared loss explains; the losses that explained one are added to `used`."""
    losses = declared_for(adapter, resource_type)
    out = []
    for diff in found:
        match = next((loss for loss in losses if loss.matches(diff.path, diff.kind)), None)
        if match is None:
            out.append(diff)
        else:
            used.add(match)
    return out
