"""SMART Backend Services: the token endpoint (private_key_jwt client assertions), bearer-token checks,
and the scopes a token carries.

A client registration may name the scopes it was granted (`granted`, None = everything). A token gets
the requested scopes the registration covers (all of the registration when none are asked for), or,
where the vendor ignores the requested scope (Epic), the registration as is. Every API request must be
covered by its token's scopes, SMART v1 (`system/Observation.write`, `.read`, `.*`) or v2
(`system/Observation.c`, `.rs`, `.cruds`), with `*` for any type; otherwise 403 insufficient_scope.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .messages import Response, json_response

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300  # seconds: Epic refuses an assertion whose exp is more than 5 minutes ahead
CLOCK_SKEW = 5
MAX_JTI_LENGTH = 151
EVERYTHING = ("system/*.*",)
_V1_ACCESS = {"read": "rs", "write": "cud", "*": "cruds"}


def parse_scopes(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(text.split()))


def _accesses(scope: str) -> tuple[str, str, str]:
    """'system/Observation.rs' -> ('system', 'Observation', 'rs'); '' accesses for a non-FHIR scope."""
    context, _, rest = scope.partition("/")
    rtype, _, permission = rest.rpartition(".")
    if context not in ("system", "user", "patient") or not rtype:
        return context, "", ""
    if permission in _V1_ACCESS:
        return context, rtype, _V1_ACCESS[permission]
    if permission and set(permission) <= set("cruds"):
        return context, rtype, permission
    return context, rtype, ""


def scope_covers(scopes: tuple[str, ...] | frozenset[str], resource_type: str, access: str) -> bool:
    """Whether a token with `scopes` may `access` (one of c r u d s) `resource_type` over FHIR."""
    for scope in scopes:
        context, rtype, accesses = _accesses(scope)
        if context in ("system", "user") and rtype in ("*", resource_type) and access in accesses:
            return True
    return False


def _scope_within(scope: str, granted: tuple[str, ...]) -> bool:
    """A requested scope the registration covers entirely (non-FHIR scopes: granted verbatim or by a
    `prefix.*` grant)."""
    if scope in granted:
        return True
    _, rtype, accesses = _accesses(scope)
    if rtype and accesses:
        return all(scope_covers(granted, rtype, a) for a in accesses)
    return any(g.endswith(".*") and scope.startswith(g[:-1]) for g in granted)


def oauth_error(status: int, error: str, description: str) -> Response:
    return json_response(
        status, {"error": error, "error_description": description}, headers={"Cache-Control": "no-store"}
    )


class TokenService:
    def __init__(
        self,
        *,
        client_id: str,
        public_keys: list[str],
        lifetime: int,
        granted: tuple[str, ...] | None = None,
        ignores_requested_scope: bool = False,
    ) -> None:
        self.client_id = client_id
        self.lifetime = lifetime
        self.granted = tuple(granted) if granted is not None else None
        self.ignores_requested_scope = ignores_requested_scope
        self._keys = [load_pem_public_key(pem.encode()) for pem in public_keys]
        self._lock = threading.Lock()
        # access token -> (expiry in epoch seconds, its scopes)
        self._tokens: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._used_jti: dict[str, float] = {}  # jti -> assertion expiry; kept until then

    def scopes_for(self, requested: str) -> tuple[str, ...]:
        """The scopes a token gets: see the module docstring."""
        asked = parse_scopes(requested)
        if self.granted is None:
            return EVERYTHING if self.ignores_requested_scope or not asked else asked
        if self.ignores_requested_scope or not asked:
            return self.granted
        return tuple(s for s in asked if _scope_within(s, self.granted))

    def issue(self, form: dict[str, str], audiences: list[str]) -> Response:
        """Answers a token request; `audiences` are the URLs this token endpoint is known by."""
        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return oauth_error(400, "invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        if not assertion:
            return oauth_error(400, "invalid_request", "client_assertion is required")
        claims, problem = self._verify(assertion, audiences)
        if problem:
            return oauth_error(401, "invalid_client", problem)
        now = time.time()
        token = secrets.token_urlsafe(32)
        scopes = self.scopes_for(form.get("scope", ""))
        with self._lock:
            if claims["jti"] in self._used_jti:
                return oauth_error(401, "invalid_client", "jti has already been used")
            self._used_jti = {j: exp for j, exp in self._used_jti.items() if exp > now}
            self._used_jti[claims["jti"]] = float(claims["exp"])
            self._tokens = {t: entry for t, entry in self._tokens.items() if entry[0] > now}
            self._tokens[token] = (now + self.lifetime, scopes)
        return json_response(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.lifetime,
                "scope": " ".join(scopes),
            },
            headers={"Cache-Control": "no-store"},
        )

    def _verify(self, assertion: str, audiences: list[str]) -> tuple[dict[str, Any], str]:
        if not self._keys:
            return {}, "no public key is registered for this client"
        options: Any = {"require": ["exp", "iss", "sub", "aud", "jti"]}
        for key in self._keys:
            try:
                claims = jwt.decode(
                    assertion,
                    key,
                    algorithms=["RS384"],
                    audience=audiences,
                    options=options,
                    leeway=CLOCK_SKEW,
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                return {}, "the client assertion has expired"
            except jwt.InvalidAudienceError:
                return {}, f"aud must be the token endpoint URL ({audiences[0]})"
            except jwt.InvalidTokenError as exc:
                return {}, f"invalid client assertion: {exc}"
            if claims["iss"] != self.client_id or claims["sub"] != self.client_id:
                return {}, f"iss and sub must both be the client id {self.client_id!r}"
            if float(claims["exp"]) > time.time() + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
                return {}, "exp must be at most 5 minutes in the future"
            if not isinstance(claims["jti"], str) or not 0 < len(claims["jti"]) <= MAX_JTI_LENGTH:
                return {}, f"jti must be a string of 1..{MAX_JTI_LENGTH} characters"
            return claims, ""
        return {}, "the client assertion's signature matches no registered key (RS384 expected)"

    def check(self, authorization: str) -> tuple[str, tuple[str, ...]]:
        """('', the token's scopes) when the Authorization header carries a live token, else (why not, ())."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "a bearer access token is required", ()
        with self._lock:
            entry = self._tokens.get(token.strip())
        if entry is None:
            return "the access token is not known", ()
        if entry[0] <= time.time():
            return "the access token has expired", ()
        return "", entry[1]

    def expire_all(self) -> int:
        """Every token issued so far expires now (clients must get a new one)."""
        now = time.time()
        with self._lock:
            live = [t for t, (exp, _) in self._tokens.items() if exp > now]
            self._tokens = {t: (now, scopes) for t, (_, scopes) in self._tokens.items()}
        return len(live)
