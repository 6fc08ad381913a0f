"""The declared wire losses: how their paths match, and that docs/vendors.md lists every one."""

from pathlib import Path

import pytest

from adapters.base import WireLoss
from adapters.registry import adapter_class

DOC = (Path(__file__).resolve().parents[2] / "docs" / "vendors.md").read_text()


@pytest.mark.parametrize(
    ("pattern", "declared", "path", "kind", "expected"),
    [
        ("identifier[*].*", "dropped", "identifier[0].value", "dropped", True),
        ("identifier[*].*", "dropped", "identifier[12].system", "dropped", True),
        ("identifier[*].*", "dropped", "identifier[0].value", "changed", False),  # the kind must match too
        ("code.coding[1].*", "dropped", "code.coding[1].code", "dropped", True),
        ("code.coding[1].*", "dropped", "code.coding[0].code", "dropped", False),
        ("code.text", "changed", "code.text", "changed", True),
        ("code.text", "changed", "code.textual", "changed", False),  # whole path, not a prefix
        ("category[0]", "added", "category[0]", "added", True),
        ("category[0]", "added", "category[0].coding[0].code", "added", False),
    ],
)
def test_a_loss_matches_whole_flattened_paths(pattern, declared, path, kind, expected):
    assert WireLoss(pattern, declared, "why").matches(path, kind) is expected


@pytest.mark.parametrize("vendor", ["generic", "epic", "athena", "veradigm"])
def test_every_declared_loss_has_a_reason_and_is_documented(vendor):
    losses = adapter_class(vendor).wire_losses()
    if vendor == "generic":
        assert losses == {}  # a conformant server stores exactly what we meant
    for resource_type, declared in losses.items():
        assert declared, resource_type
        for loss in declared:
            assert loss.kind in ("dropped", "changed", "added") and loss.why
            assert f"`{loss.path}`" in DOC, (vendor, resource_type, loss.path)
