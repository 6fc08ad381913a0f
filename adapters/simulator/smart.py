"""SMART Backend Services: the token endpoint (private_key_jwt client assertions) and bearer-token checks."""

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


def oauth_error(status: int, error: str, description: str) -> Response:
    return json_response(
        status, {"error": error, "error_description": description}, headers={"Cache-Control": "no-store"}
    )


class TokenService:
    def __init__(self, *, client_id: str, public_keys: list[str], lifetime: int) -> None:
        self.client_id = client_id
        self.lifetime = lifetime
        self._keys = [load_pem_public_key(pem.encode()) for pem in public_keys]
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        self._used_jti: dict[str, float] = {}  # jti -> assertion expiry; kept until then

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
        with self._lock:
            if claims["jti"] in self._used_jti:
                return oauth_error(401, "invalid_client", "jti has already been used")
            self._used_jti = {j: exp for j, exp in self._used_jti.items() if exp > now}
            self._used_jti[claims["jti"]] = float(claims["exp"])
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.lifetime
        return json_response(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.lifetime,
                "scope": form.get("scope", ""),
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

    def check(self, authorization: str) -> str:
        """'' when the Authorization header carries a live token, else why not."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "a bearer access token is required"
        with self._lock:
            expiry = self._tokens.get(token.strip())
        if expiry is None:
            return "the access token is not known"
        if expiry <= time.time():
            return "the access token has expired"
        return ""

    def expire_all(self) -> int:
        """Every token issued so far expires now (clients must get a new one)."""
        now = time.time()
        with self._lock:
            live = [t for t, exp in self._tokens.items() if exp > now]
            self._tokens = {t: now for t in self._tokens}
        return len(live)
