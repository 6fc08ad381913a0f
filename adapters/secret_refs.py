"""Secrets are configured by reference, never by value: `env:VARNAME` or a path to a file.

Tenants, settings and logs only ever hold the reference; the value is read at the moment it is needed.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretRefError(Exception):
    """The reference is malformed, or what it points to is missing or empty (the message never holds the
    secret itself)."""


def resolve_secret_ref(ref: str, *, what: str = "secret") -> str:
    ref = (ref or "").strip()
    if not ref:
        raise SecretRefError(f"no {what} configured")
    if ref.startswith("env:"):
        name = ref[4:].strip()
        if not name:
            raise SecretRefError(f"{what} reference {ref!r} names no environment variable")
        value = os.environ.get(name, "")
        if not value:
            raise SecretRefError(f"{what}: environment variable {name} is not set")
        return value
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists():
        # A relative name that is not a file is most likely a literal secret pasted into the field.
        raise SecretRefError(f"{what} must be 'env:VARNAME' or a path to a file, not a literal value")
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise SecretRefError(f"{what}: cannot read {path} ({exc.strerror or type(exc).__name__})")
    if not value:
        raise SecretRefError(f"{what}: {path} is empty")
    return value
