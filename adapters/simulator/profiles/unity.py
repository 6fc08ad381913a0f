"""Veradigm Unity (docs/wire-formats.md): JSON RPC at `/Unity/UnityService.svc/json/{action}`.

GetToken, then GetUserAuthentication (mandatory before any other MagicJson action for that token), then
MagicJson actions. Every error is HTTP 200 with `[{"Error": "..."}]`. Saved items land in the store as
FHIR resources, readable through the read-only FHIR API, with the marker note in `note`/`description`.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from xml.etree import ElementTree

from .. import chart_items
from ..messages import BadRequest, Request, Response, json_response
from ..reference_data import DIASTOLIC, RXNORM, SYSTOLIC, VITALS_BY_LOINC, VitalSign
from ..store import Resource, Store

UNITY_PATH = "/Unity/UnityService.svc/json/"
NOTE_TYPE_SYSTEM = "https://unity.veradigm.com/notetype"
PROBLEM_STATUSES = {"active", "inactive", "resolved", "recurrence", "relapse", "remission"}
MEDICATION_STATUSES = {"active", "completed", "entered-in-error", "intended", "stopped", "on-hold"}
TASK_STATUSES = {
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
}
CRITICALITIES = {"low", "high", "unable-to-assess"}


class UnityError(Exception):
    """Answered as HTTP 200 `[{"Error": message}]`, as Unity does."""


@dataclass
class Session:
    username: str
    authenticated_users: set[str] = field(default_factory=set)


def answer(action: str, key: str, ids: list[str]) -> Response:
    return json_response(200, [{f"{action.lower()}info": [{key: i} for i in ids]}])


def iso_instant(value: str, what: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UnityError(f"{what} must be an ISO 8601 date-time, got {value!r}")
    if moment.tzinfo is None:
        raise UnityError(f"{what} needs a timezone, got {value!r}")
    return value


class Unity:
    def __init__(self, store: Store, users: dict[str, str]) -> None:
        self.store = store
        self.users = dict(users)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(50001)
        self._actions: dict[str, Callable[[dict[str, Any], str], Response]] = {
            "SaveVitalsData": self.save_vitals,
            "SaveProblemsData": self.save_problem,
            "SaveAllergy": self.save_allergy,
            "SaveNote": self.save_note,
            "SaveRX": self.save_rx,
            "SaveTaskStatus": self.save_task_status,
        }

    def handle(self, req: Request) -> Response:
        endpoint = req.path[len(UNITY_PATH) :]
        try:
            if req.method != "POST":
                raise UnityError(f"{endpoint} takes POST")
            body = req.json()
            if not isinstance(body, dict):
                raise UnityError("the request body must be a JSON object")
            if endpoint == "GetToken":
                return self.get_token(body)
            if endpoint == "GetUserAuthentication" or (
                endpoint == "MagicJson" and body.get("Action") == "GetUserAuthentication"
            ):
                return self.user_authentication(body)
            if endpoint == "MagicJson":
                return self.magic(body)
            raise UnityError(f"Unknown Unity endpoint {endpoint!r}")
        except (UnityError, BadRequest) as exc:
            return json_response(200, [{"Error": str(exc)}])

    # -- session -----------------------------------------------------------------------------------
    def get_token(self, body: dict[str, Any]) -> Response:
        username, password = str(body.get("Username", "")), str(body.get("Password", ""))
        if not username or self.users.get(username) != password:
            raise UnityError("Invalid username or password")
        token = secrets.token_hex(16).upper()
        with self._lock:
            self._sessions[token] = Session(username)
        return json_response(200, token)

    def _session(self, body: dict[str, Any]) -> Session:
        with self._lock:
            session = self._sessions.get(str(body.get("Token", "")))
        if session is None:
            raise UnityError("Invalid security token")
        return session

    def user_authentication(self, body: dict[str, Any]) -> Response:
        session = self._session(body)
        user, password = str(body.get("AppUserID", "")), str(body.get("Parameter1", ""))
        if not user or self.users.get(user) != password:
            return json_response(
                200,
                [{"getuserauthenticationinfo": [{"ValidUser": "NO", "ErrorMessage": "Invalid EHR user"}]}],
            )
        with self._lock:
            session.authenticated_users.add(user)
        return json_response(200, [{"getuserauthenticationinfo": [{"ValidUser": "YES"}]}])

    def magic(self, body: dict[str, Any]) -> Response:
        session = self._session(body)
        if str(body.get("AppUserID", "")) not in session.authenticated_users:
            raise UnityError("Magic action requires user authentication")
        action = self._actions.get(str(body.get("Action", "")))
        if action is None:
            raise UnityError(f"Unknown Magic action {body.get('Action')!r}")
        patient_id = str(body.get("PatientID", ""))
        if self.store.read("Patient", patient_id) is None:
            raise UnityError(f"Patient {patient_id!r} not found")
        return action(body, patient_id)

    def _store(self, resource: Resource) -> str:
        resource_id = str(next(self._ids))
        self.store.create(resource, resource_id=resource_id)
        return resource_id

    # -- Magic actions -----------------------------------------------------------------------------
    def save_vitals(self, body: dict[str, Any], patient_id: str) -> Response:
        try:
            readings = json.loads(str(body.get("Parameter1") or ""))
        except ValueError:
            raise UnityError("Parameter1 must be JSON text: a list of vitals")
        if not isinstance(readings, list) or not readings or not all(isinstance(r, dict) for r in readings):
            raise UnityError("Parameter1 must be a non-empty list of vitals")
        note = str(body.get("Parameter2") or "")
        parsed: dict[str, tuple[float, str, str]] = {}
        for reading in readings:
            code = str(reading.get("code", ""))
            if not code:
                raise UnityError("every vital needs a LOINC code")
            try:
                value = float(reading.get("value"))
            except (TypeError, ValueError):
                raise UnityError(f"vital {code} needs a numeric value")
            parsed[code] = (
                value,
                str(reading.get("unit", "")),
                iso_instant(str(reading.get("effective", "")), code),
            )
        resources = []
        if SYSTOLIC in parsed and DIASTOLIC in parsed:
            systolic, diastolic = parsed.pop(SYSTOLIC), parsed.pop(DIASTOLIC)
            resources.append(
                chart_items.blood_pressure(patient_id, systolic[0], diastolic[0], systolic[2], note)
            )
        for code, (value, unit, effective) in parsed.items():
            known = VITALS_BY_LOINC.get(code)
            sign = VitalSign(code, known.display if known else "", unit or (known.unit if known else ""))
            resources.append(chart_items.vital(patient_id, sign, value, effective, note))
        return answer("SaveVitalsData", "ID", [self._store(r) for r in resources])

    def save_problem(self, body: dict[str, Any], patient_id: str) -> Response:
        fields = self._problem_fields(str(body.get("Parameter1") or ""))
        if not fields.get("code"):
            raise UnityError("SaveProblemsData needs the code field")
        status = fields.get("status", "active").lower()
        if status not in PROBLEM_STATUSES:
            raise UnityError(f"Invalid problem status {fields['status']!r}")
        onset = fields.get("onset", "")
        if onset:
            try:
                date.fromisoformat(onset[:10])
            except ValueError:
                raise UnityError(f"Invalid onset {onset!r}")
        condition = chart_items.problem(
            patient_id, fields["code"], fields.get("display", ""), status, onset, fields.get("note", "")
        )
        return answer("SaveProblemsData", "ProblemID", [self._store(condition)])

    @staticmethod
    def _problem_fields(xml: str) -> dict[str, str]:
        try:
            # The stdlib parser resolves no external entities; internal entity expansion is bounded by expat.
            root = ElementTree.fromstring(xml)  # noqa: S314
        except ElementTree.ParseError as exc:
            raise UnityError(f"Parameter1 is not well-formed XML: {exc}")
        if root.tag != "saveproblemsdatarequest":
            raise UnityError("Parameter1 must be a <saveproblemsdatarequest> document")
        return {
            item.get("fieldid", ""): item.get("value1", "")
            for item in root.iter("saveproblemsdata")
            if item.get("fieldid")
        }

    def save_allergy(self, body: dict[str, Any], patient_id: str) -> Response:
        rxnorm = str(body.get("Parameter1") or "").strip()
        if not rxnorm:
            raise UnityError("SaveAllergy needs the allergen's RxNorm code in Parameter1")
        criticality = str(body.get("Parameter3") or "").lower()
        if criticality and criticality not in CRITICALITIES:
            raise UnityError(f"Invalid criticality {body['Parameter3']!r}")
        display = str(body.get("Parameter2") or "")
        code = {"coding": [{"system": RXNORM, "code": rxnorm} | ({"display": display} if display else {})]}
        code |= {"text": display} if display else {}
        reaction_text = str(body.get("Parameter4") or "")
        reactions = [chart_items.reaction(reaction_text)] if reaction_text else []
        allergy = chart_items.allergy(
            patient_id, code, criticality, reactions, str(body.get("Parameter6") or "")
        )
        return answer("SaveAllergy", "AllergyID", [self._store(allergy)])

    def save_note(self, body: dict[str, Any], patient_id: str) -> Response:
        text = str(body.get("Data") or "")
        if not text.strip():
            raise UnityError("SaveNote needs the note text in Data")
        type_code, title = str(body.get("Parameter1") or ""), str(body.get("Parameter2") or "")
        note_type = {
            "coding": [{"system": NOTE_TYPE_SYSTEM, "code": type_code}] if type_code else [],
            "text": title,
        }
        document = chart_items.clinical_note(
            patient_id, note_type, text, str(body.get("Parameter6") or ""), final=True
        )
        return answer("SaveNote", "NoteID", [self._store(document)])

    def save_rx(self, body: dict[str, Any], patient_id: str) -> Response:
        rxnorm = str(body.get("Parameter1") or "").strip()
        if not rxnorm:
            raise UnityError("SaveRX needs the RxNorm code in Parameter1")
        status = str(body.get("Parameter4") or "active").lower()
        if status not in MEDICATION_STATUSES:
            raise UnityError(f"Invalid medication status {body['Parameter4']!r}")
        statement = chart_items.medication(
            patient_id,
            rxnorm,
            str(body.get("Parameter2") or ""),
            status,
            str(body.get("Parameter3") or ""),
            "",
            str(body.get("Parameter6") or ""),
        )
        return answer("SaveRX", "RxID", [self._store(statement)])

    def save_task_status(self, body: dict[str, Any], patient_id: str) -> Response:
        task_id, status = str(body.get("Parameter1") or ""), str(body.get("Parameter2") or "").lower()
        if status not in TASK_STATUSES:
            raise UnityError(f"Invalid task status {body.get('Parameter2')!r}")
        task = self.store.read("Task", task_id)
        if task is None or (task.get("for") or {}).get("reference") != f"Patient/{patient_id}":
            raise UnityError(f"Task {task_id!r} not found for patient {patient_id!r}")
        self.store.modify("Task", task_id, lambda current: current | {"status": status})
        return answer("SaveTaskStatus", "TaskID", [task_id])
