"""SMART Backend Services: a signed JWT client assertion (RS384) exchanged for a bearer token.

Tokens are cached per (token URL, client id, scope, key), shared by every adapter instance and worker
thread of the process, and refreshed shortly before they expire. A 401 from the FHIR server makes the
client drop the token and fetch a new one once (`adapters.http.FhirClient.send`); a second 401 is
terminal.

Scopes are least privilege, computed from what the tenant enabled: SMART v2 `system/<Type>.c` to create,
`.u` to update or patch, `.rs` to read and search; v1 spells both writes `system/<Type>.write` and reads
`system/<Type>.read`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from adapters.base import Outcome, TargetConfig
from adapters.http import AuthUnavailable
from adapters.secret_refs import SecretRefError, resolve_secret_ref

logger = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHM = "RS384"
# Epic and others refuse an assertion whose exp is more than 5 minutes ahead; stay well inside that.
ASSERTION_LIFETIME_S = 240
# A token is refreshed this long (at most a quarter of its lifetime) before it expires, so a request
# never leaves with a token that dies on the way.
REFRESH_MARGIN_S = 60
DEFAULT_TOKEN_LIFETIME_S = 300

READ = "rs"
CREATE = "c"
UPDATE = "u"
_ACCESS_FOR_OPERATION = {
    "create": CREATE,
    "conditional_create": CREATE,
    "update": UPDATE,
    "patch": UPDATE,
    "compensate": UPDATE,
    "read": READ,
    "search": READ,
}


# --- scopes ------------------------------------------------------------------------------------------


def access_needs(
    enabled: Iterable[tuple[str, str]], *, fhir_types: Iterable[str] | None = None, read_back: bool = True
) -> set[tuple[str, str]]:
    """(resource type, access) pairs the tenant's enabled operations need over FHIR.

    Writes count only for types written through FHIR (`fhir_types`; None = all); every written type also
    needs read access, because check-by-read and read-back are how we prove what landed."""
    fhir = None if fhir_types is None else set(fhir_types)
    needs: set[tuple[str, str]] = set()
    for rtype, operation in enabled:
        access = _ACCESS_FOR_OPERATION.get(operation)
        if access is None:
            continue
        if access != READ and (fhir is None or rtype in fhir):
            needs.add((rtype, access))
        if access == READ or read_back:
            needs.add((rtype, READ))
    return needs


def scopes_for(needs: Iterable[tuple[str, str]], style: str = "v2") -> str:
    scopes = set()
    for rtype, access in needs:
        if style == "v1":
            scopes.add(f"system/{rtype}.{'read' if access == READ else 'write'}")
        else:
            scopes.add(f"system/{rtype}.{access}")
    return " ".join(sorted(scopes))


# --- the client assertion ----------------------------------------------------------------------------


def load_private_key(ref: str) -> Any:
    """The PEM private key behind `ref` (`env:VAR` or a file path)."""
    pem = resolve_secret_ref(ref, what="private key")
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise SecretRefError(
            f"private key {ref!r} is not an unencrypted PEM private key ({type(exc).__name__})"
        )


def client_assertion(
    *, client_id: str, token_url: str, private_key: Any, key_id: str = "", now: float | None = None
) -> str:
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": uuid.uuid4().hex,  # never reused: servers refuse a replayed assertion
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_S,
    }
    headers = {"typ": "JWT"}
    if key_id:
        headers["kid"] = key_id
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers=headers)


# --- the token cache ---------------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    refresh_at: float  # time.monotonic() after which a new token is fetched


_cache: dict[tuple[str, ...], _Token] = {}
_locks: dict[tuple[str, ...], threading.Lock] = {}
_locks_guard = threading.Lock()


def clear_token_cache() -> None:
    with _locks_guard:
        _cache.clear()


def _lock_for(key: tuple[str, ...]) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


class SmartBackendAuth:
    """A `TokenSource` for `adapters.http.FhirClient`."""

    def __init__(
        self, *, token_url: str, client_id: str, private_key_ref: str, key_id: str = "", scope: str = ""
    ):
        self.token_url = token_url
        self.client_id = client_id
        self.private_key_ref = private_key_ref
        self.key_id = key_id
        self.scope = scope
        # Shared by every adapter of this client: the same registration, key and scope get the same token.
        self._key = (token_url, client_id, scope, private_key_ref, key_id)

    @classmethod
    def for_target(cls, target: TargetConfig, scope: str) -> SmartBackendAuth:
        return cls(
            token_url=target.token_url,
            client_id=target.client_id,
            private_key_ref=target.private_key_ref,
            key_id=target.key_id,
            scope=scope,
        )

    def token(self, http: httpx.Client, *, correlation_id: str = "") -> str:
        cached = _cache.get(self._key)
        if cached and cached.refresh_at > time.monotonic():
            return cached.value
        with _lock_for(self._key):
            # Another thread may have refreshed it while this one waited for the lock.
            cached = _cache.get(self._key)
            if cached and cached.refresh_at > time.monotonic():
                return cached.value
            fresh = self._fetch(http, correlation_id)
            _cache[self._key] = fresh
            return fresh.value

    def invalidate(self, token: str) -> None:
        with _lock_for(self._key):
            cached = _cache.get(self._key)
            # Only drop the token that failed: another thread may already hold a newer one.
            if cached and cached.value == token:
                del _cache[self._key]

    def _fetch(self, http: httpx.Client, correlation_id: str = "") -> _Token:
        if not (self.token_url and self.client_id):
            raise AuthUnavailable("SMART auth needs a token URL and a client id", Outcome.TERMINAL)
        try:
            key = load_private_key(self.private_key_ref)
        except SecretRefError as exc:
            raise AuthUnavailable(str(exc), Outcome.TERMINAL)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(
                client_id=self.client_id, token_url=self.token_url, private_key=key, key_id=self.key_id
            ),
        }
        if self.scope:
            form["scope"] = self.scope
        request_id = str(uuid.uuid4())
        headers = {"Accept": "application/json", "X-Request-ID": request_id}
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        started = time.monotonic()
        try:
            response = http.post(self.token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            # Asking for a token twice is harmless, so every transport failure is simply "try later".
            logger.warning(
                "token request %s to %s failed: %s", request_id, self.token_url, type(exc).__name__
            )
            raise AuthUnavailable(f"token endpoint unreachable ({type(exc).__name__})", Outcome.RETRYABLE)
        body = _json(response)
        if response.status_code != 200:
            reason = ": ".join(
                str(body[k]) for k in ("error", "error_description") if isinstance(body, dict) and body.get(k)
            )
            message = f"token endpoint answered HTTP {response.status_code}" + (
                f" ({reason})" if reason else ""
            )
            retryable = response.status_code in (408, 429) or response.status_code >= 500
            raise AuthUnavailable(message, Outcome.RETRYABLE if retryable else Outcome.TERMINAL)
        if not isinstance(body, dict) or not body.get("access_token"):
            raise AuthUnavailable("token endpoint answered without an access_token", Outcome.TERMINAL)
        try:
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME_S)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME_S
        logger.info(
            "access token fetched for client %s (request %s, expires in %.0f s)",
            self.client_id,
            request_id,
            lifetime,
        )
        margin = min(REFRESH_MARGIN_S, lifetime / 4)
        return _Token(str(body["access_token"]), started + lifetime - margin)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
