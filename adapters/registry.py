"""Vendor name -> adapter class, imported lazily so a vendor's code loads only when a tenant uses it."""

from importlib import import_module

from adapters.base import TargetConfig, VendorAdapter

ADAPTERS = {
    "epic": "adapters.epic.adapter.EpicAdapter",
    "athena": "adapters.athena.adapter.AthenaAdapter",
    "veradigm": "adapters.veradigm.adapter.VeradigmAdapter",
    "generic": "adapters.generic.adapter.GenericFhirAdapter",
}


def adapter_class(vendor: str) -> type[VendorAdapter]:
    try:
        dotted = ADAPTERS[vendor]
    except KeyError:
        raise ValueError(f"unknown vendor {vendor!r}; known: {', '.join(sorted(ADAPTERS))}")
    module, _, name = dotted.rpartition(".")
    return getattr(import_module(module), name)


def get_adapter(target: TargetConfig) -> VendorAdapter:
    return adapter_class(target.vendor)(target)
