"""Veradigm Unity: the JSON RPC session (GetToken, then GetUserAuthentication once per token, then
MagicJson actions), with errors that arrive in HTTP 200 (`adapters.classify`, Unity dialect).

Credentials come from the tenant's settings by reference, for every tenant alike: `unity_username`,
`unity_password_ref`, `unity_appname`, `unity_ehr_user`, `unity_ehr_password_ref` (`env:VAR` or a file
path, never a literal). The demo and the tests configure the simulator's account the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import Outcome, TargetConfig
from adapters.classify import Classification, Dialect, classify, unity_error_text
from adapters.fhir_rest import api_root
from adapters.http import FhirClient, HttpReply, RequestSpec
from adapters.secret_refs import SecretRefError, resolve_secret_ref

UNITY_PATH = "/Unity/UnityService.svc/json"
SETTING_KEYS = (
    "unity_username",
    "unity_password_ref",
    "unity_appname",
    "unity_ehr_user",
    "unity_ehr_password_ref",
)
# Unity's wording for a token it no longer knows: re-authenticate once, then give up.
_STALE_TOKEN_WORDS = ("security token", "invalid token", "token expired", "token has expired")


@dataclass(frozen=True)
class UnityCredentials:
    username: str
    password: str
    appname: str
    ehr_user: str
    ehr_password: str


class UnityConfigError(Exception):
    pass


def credentials(target: TargetConfig) -> UnityCredentials:
    s = target.settings
    missing = [k for k in SETTING_KEYS if not s.get(k)]
    if len(missing) == len(SETTING_KEYS):
        raise UnityConfigError(f"Unity needs settings {', '.join(SETTING_KEYS)}")
    if missing:
        raise UnityConfigError(f"Unity settings missing: {', '.join(missing)}")
    try:
        return UnityCredentials(
            username=str(s["unity_username"]),
            password=resolve_secret_ref(str(s["unity_password_ref"]), what="Unity password"),
            appname=str(s["unity_appname"]),
            ehr_user=str(s["unity_ehr_user"]),
            ehr_password=resolve_secret_ref(str(s["unity_ehr_password_ref"]), what="Unity EHR user password"),
        )
    except SecretRefError as exc:
        raise UnityConfigError(str(exc))


@dataclass
class UnityCall:
    """One Magic action: its parameters (Parameter1..6, Data), before the session fields are added."""

    action: str
    patient_id: str
    params: dict[str, str]

    def body(self, creds: UnityCredentials | None, token: str) -> dict[str, Any]:
        return {
            "Action": self.action,
            "AppUserID": creds.ehr_user if creds else "<unity_ehr_user>",
            "Appname": creds.appname if creds else "<unity_appname>",
            "PatientID": self.patient_id,
            "Token": token,
            **self.params,
        }


class UnitySession:
    """A Unity token and its user authentication, for one adapter (one worker thread)."""

    def __init__(self, client: FhirClient, target: TargetConfig) -> None:
        self.client = client
        self.target = target
        self.root = f"{api_root(target)}{UNITY_PATH}"
        self._token = ""
        self._authenticated = False

    def spec(self, call: UnityCall, creds: UnityCredentials | None = None) -> RequestSpec:
        return RequestSpec(
            "POST",
            f"{self.root}/MagicJson",
            json=call.body(creds, self._token or "<token>"),
            fhir=False,
            authenticate=False,
        )

    def magic(self, call: UnityCall, correlation_id: str) -> tuple[HttpReply | None, Classification]:
        """Runs one Magic action, authenticating first if needed. A stale token is renewed once; any other
        failure is returned classified."""
        for attempt in (1, 2):
            creds, failure = self._authenticate(correlation_id)
            if failure is not None:
                return None, failure
            reply = self.client.send(self.spec(call, creds), correlation_id=correlation_id)
            cls = classify(reply, Dialect.UNITY)
            stale = any(w in unity_error_text(reply).lower() for w in _STALE_TOKEN_WORDS)
            if stale and attempt == 1:
                # Unity refused the token before acting on it: nothing landed, renew and send again.
                self._token, self._authenticated = "", False
                continue
            return reply, cls
        raise AssertionError("unreachable")

    def _authenticate(self, correlation_id: str) -> tuple[UnityCredentials | None, Classification | None]:
        try:
            creds = credentials(self.target)
        except UnityConfigError as exc:
            return None, Classification(Outcome.TERMINAL, str(exc))
        if not self._token:
            spec = RequestSpec(
                "POST",
                f"{self.root}/GetToken",
                json={"Username": creds.username, "Password": creds.password, "Appname": creds.appname},
                fhir=False,
                secret_response=True,
                authenticate=False,
            )
            reply = self.client.send(spec, correlation_id=correlation_id)
            cls = classify(reply, Dialect.UNITY)
            if not cls.committed:
                return None, _before_sending(cls, "GetToken")
            if not isinstance(reply.body, str) or not reply.body:
                return None, Classification(Outcome.TERMINAL, "Unity GetToken answered without a token")
            self._token, self._authenticated = reply.body, False
        if not self._authenticated:
            spec = RequestSpec(
                "POST",
                f"{self.root}/GetUserAuthentication",
                json={
                    "Action": "GetUserAuthentication",
                    "AppUserID": creds.ehr_user,
                    "Appname": creds.appname,
                    "Token": self._token,
                    "Parameter1": creds.ehr_password,
                },
                fhir=False,
                secret_fields=("Parameter1",),
                authenticate=False,
            )
            reply = self.client.send(spec, correlation_id=correlation_id)
            cls = classify(reply, Dialect.UNITY)
            if not cls.committed:
                return None, _before_sending(cls, "GetUserAuthentication")
            info = _first_info(reply.body)
            if str(info.get("ValidUser", "")).upper() != "YES":
                reason = info.get("ErrorMessage") or "the EHR user was not accepted"
                return None, Classification(Outcome.TERMINAL, f"Unity user authentication failed: {reason}")
            self._authenticated = True
        return creds, None


def _before_sending(cls: Classification, step: str) -> Classification:
    """A failed session step: the write itself was not sent, so an ambiguous step is merely retryable."""
    outcome = Outcome.RETRYABLE if cls.outcome is Outcome.AMBIGUOUS else cls.outcome
    return Classification(outcome, f"Unity {step}: {cls.message}", cls.retry_after)


def _first_info(body: Any) -> dict[str, Any]:
    """`[{"<action>info": [{...}]}]` -> the first {...}."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        for value in body[0].values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return value[0]
    return {}


def saved_ids(body: Any) -> list[str]:
    """The ids a Save action answered with (`[{"saveXinfo": [{"ID": "..."}]}]`)."""
    if not (isinstance(body, list) and body and isinstance(body[0], dict)):
        return []
    ids: list[str] = []
    for value in body[0].values():
        for item in value if isinstance(value, list) else []:
            if isinstance(item, dict):
                ids += [str(v) for v in item.values() if v not in (None, "")]
    return ids
