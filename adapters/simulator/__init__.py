"""The EHR simulator: a real HTTP server that behaves like Epic, athenahealth, Veradigm or a
spec-correct FHIR R4 server, over one versioned store, and fails on demand. See docs/simulator.md."""

from .handle import SimulatorHandle, start_simulator

__all__ = ["SimulatorHandle", "start_simulator"]
