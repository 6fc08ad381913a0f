"""athenaOne v1 REST (docs/wire-formats.md): form-encoded chart writes under `/v1/{practiceid}`.

Business failures are 2xx `{"success": false, "errormessage"}`; request errors 4xx `{"error",
"detailedmessage"}`. Every write becomes a FHIR resource with id `a-{practiceid}.{Kind}-{n}`, carrying
the write's note (the `[wb:...]` marker) in `note` or `description`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import chart_items
from ..messages import BadRequest, Request, Response, json_response
from ..reference_data import (
    ALLERGENS,
    ALLERGENS_BY_ID,
    ATHENA_VITALS,
    MEDICATIONS,
    MEDICATIONS_BY_ID,
    RXNORM,
    lookup,
)
from ..store import Resource, Store

ALLERGEN_SYSTEM = "https://api.athenahealth.com/allergenid"
DOCUMENT_TYPE_SYSTEM = "https://api.athenahealth.com/documenttypeid"
FORM = "application/x-www-form-urlencoded"
SEVERITIES = {"mild", "moderate", "severe"}
CRITICALITIES = {"low", "high", "unable-to-assess"}
PHONE = re.compile(r"^[0-9()+\-. ]{7,20}$")
ZIP = re.compile(r"^\d{5}(-\d{4})?$")


@dataclass(frozen=True)
class Reading:
    value: float
    taken: str  # ISO instant
    note: str
    vitalid: int


class RequestError(Exception):
    """A 4xx `{"error", "detailedmessage"}` answer."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail or error


class Failure(Exception):
    """A business failure: athena answers 200 with `success: false`."""


def parse_date(value: str, field: str) -> str:
    """MM/DD/YYYY -> YYYY-MM-DD; athena refuses every other spelling."""
    try:
        return datetime.strptime(value, "%m/%d/%Y").date().isoformat()
    except ValueError:
        raise Failure(f"{field} must be a date as MM/DD/YYYY, got {value!r}")


def parse_reading_time(value: str) -> str:
    """`MM/DD/YYYY HH:MM` (or a bare date) -> an ISO instant; the practice clock is UTC."""
    for pattern in ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y"):
        try:
            return datetime.strptime(value, pattern).isoformat(timespec="seconds") + "Z"
        except ValueError:
            continue
    raise Failure(f"readingtaken must be MM/DD/YYYY HH:MM, got {value!r}")


def parse_number(value: Any, field: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Failure(f"{field} must be a number, got {value!r}")


def json_field(form: dict[str, str], field: str) -> Any:
    try:
        return json.loads(form[field])
    except (KeyError, ValueError):
        raise RequestError(400, f"Invalid {field}", f"{field} must be JSON text")


class AthenaV1:
    def __init__(self, store: Store, practice_id: str) -> None:
        self.store = store
        self.practice_id = practice_id
        self._numbers = itertools.count(1001)  # athena's numeric ids (vitalid, problemid, ...)
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/ping", self.ping),
            ("POST", r"/chart/(?P<patient>[^/]+)/vitals", self.vitals),
            ("POST", r"/chart/(?P<patient>[^/]+)/problems", self.problem),
            ("PUT", r"/chart/(?P<patient>[^/]+)/allergies", self.allergies),
            ("POST", r"/chart/(?P<patient>[^/]+)/medications", self.medication),
            ("POST", r"/patients/(?P<patient>[^/]+)/documents/clinicaldocument", self.clinical_document),
            ("PUT", r"/patients/(?P<patient>[^/]+)", self.demographics),
            ("GET", r"/reference/allergies", self.allergen_lookup),
            ("GET", r"/reference/medications", self.medication_lookup),
        ]
        self._routes = [(method, re.compile(f"^{pattern}$"), handler) for method, pattern, handler in routes]

    def handle(self, req: Request) -> Response:
        prefix = f"/v1/{self.practice_id}"
        if not (req.path + "/").startswith(prefix + "/"):
            return json_response(404, {"error": "Invalid practice", "detailedmessage": "unknown practiceid"})
        path = req.path[len(prefix) :] or "/"
        matched = [
            (method, match, h) for method, pattern, h in self._routes if (match := pattern.match(path))
        ]
        if not matched:
            return json_response(
                404, {"error": "Not found", "detailedmessage": f"no v1 endpoint at {req.path}"}
            )
        chosen = next(((match, h) for method, match, h in matched if method == req.method), None)
        if chosen is None:
            return json_response(
                405, {"error": "Method not allowed", "detailedmessage": f"{req.method} {req.path}"}
            )
        match, handler = chosen
        try:
            return handler(req, **match.groupdict())
        except RequestError as exc:
            return json_response(exc.status, {"error": exc.error, "detailedmessage": exc.detail})
        except Failure as exc:
            return json_response(200, {"success": False, "errormessage": str(exc)})
        except BadRequest as exc:
            return json_response(400, {"error": "Invalid request", "detailedmessage": str(exc)})

    # -- helpers -----------------------------------------------------------------------------------
    def _form(self, req: Request, *required: str) -> dict[str, str]:
        if req.content_type not in ("", FORM):
            raise RequestError(400, "Invalid content type", f"v1 writes take {FORM}")
        form = req.form()
        missing = [field for field in required if not form.get(field, "").strip()]
        if missing:
            raise RequestError(400, "Additional fields are required.", f"missing: {', '.join(missing)}")
        return form

    def _patient(self, athena_id: str) -> str:
        """The FHIR id of athena patient `athena_id` (`a-{practiceid}.E-{id}` or, for seeded ids, the id)."""
        for candidate in (f"a-{self.practice_id}.E-{athena_id}", athena_id):
            if self.store.read("Patient", candidate) is not None:
                return candidate
        raise Failure(f"Patient {athena_id} not found in practice {self.practice_id}")

    def _store(self, resource: Resource, kind: str, number: int | None = None) -> str:
        number = next(self._numbers) if number is None else number
        self.store.create(resource, resource_id=f"a-{self.practice_id}.{kind}-{number}")
        return str(number)

    # -- endpoints ---------------------------------------------------------------------------------
    def ping(self, req: Request) -> Response:
        return json_response(200, {"pong": "true"})

    def vitals(self, req: Request, patient: str) -> Response:
        form = self._form(req, "departmentid", "vitals")
        groups = json_field(form, "vitals")
        if not isinstance(groups, list) or not all(isinstance(g, list | dict) for g in groups):
            raise RequestError(400, "Invalid vitals", "vitals is a JSON list of reading groups")
        patient_id = self._patient(patient)
        resources: list[tuple[Resource, int]] = []
        vitalids: list[str] = []
        for group in groups:
            readings = [group] if isinstance(group, dict) else group
            built, numbers = self._vital_group(patient_id, readings)
            resources += built
            vitalids += numbers
        for resource, number in resources:  # validated as a whole first: nothing is stored on a failure
            self._store(resource, "Vitals", number)
        answer: dict[str, Any] = {"success": True}
        if form.get("returnvitalids", "").lower() == "true":
            answer["vitalids"] = vitalids
        return json_response(200, answer)

    def _vital_group(
        self, patient_id: str, readings: list[Any]
    ) -> tuple[list[tuple[Resource, int]], list[str]]:
        """One group's readings -> (resources with their vitalid, the vitalids); BP pairs -> one panel."""
        parsed: dict[str, Reading] = {}
        for item in readings:
            if not isinstance(item, dict):
                raise RequestError(400, "Invalid vitals", "each reading is a JSON object")
            element = str(item.get("clinicalelementid", ""))
            if element not in ATHENA_VITALS:
                raise Failure(f"Unknown clinicalelementid {element!r}")
            parsed[element] = Reading(
                value=parse_number(item.get("value"), element),
                taken=parse_reading_time(str(item.get("readingtaken", ""))),
                note=str(item.get("note", "")),
                vitalid=next(self._numbers),
            )
        systolic = parsed.pop("VITALS.BLOODPRESSURE.SYSTOLIC", None)
        diastolic = parsed.pop("VITALS.BLOODPRESSURE.DIASTOLIC", None)
        if (systolic is None) != (diastolic is None):
            raise Failure("Blood pressure needs both VITALS.BLOODPRESSURE.SYSTOLIC and DIASTOLIC")
        resources: list[tuple[Resource, int]] = []
        vitalids: list[str] = []
        if systolic and diastolic:
            note = systolic.note or diastolic.note
            panel = chart_items.blood_pressure(
                patient_id, systolic.value, diastolic.value, systolic.taken, note
            )
            resources.append((panel, systolic.vitalid))
            vitalids += [str(systolic.vitalid), str(diastolic.vitalid)]
        for element, reading in parsed.items():
            sign = ATHENA_VITALS[element]
            resources.append(
                (
                    chart_items.vital(patient_id, sign, reading.value, reading.taken, reading.note),
                    reading.vitalid,
                )
            )
            vitalids.append(str(reading.vitalid))
        return resources, vitalids

    def problem(self, req: Request, patient: str) -> Response:
        form = self._form(req, "departmentid", "snomedcode")
        patient_id = self._patient(patient)
        snomed = form["snomedcode"].strip()
        if not snomed.isdigit():
            raise Failure(f"Invalid snomedcode {snomed!r}")
        onset = parse_date(form["startdate"], "startdate") if form.get("startdate") else ""
        status = form.get("status", "").upper()
        if status not in ("", "CHRONIC", "ACUTE"):
            raise Failure(f"status must be CHRONIC or ACUTE, got {form['status']!r}")
        condition = chart_items.problem(patient_id, snomed, "", "active", onset, form.get("note", ""))
        return json_response(200, {"success": True, "problemid": self._store(condition, "Problem")})

    def allergies(self, req: Request, patient: str) -> Response:
        form = self._form(req, "departmentid", "allergies")
        entries = json_field(form, "allergies")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise RequestError(400, "Invalid allergies", "allergies is a JSON list of objects")
        patient_id = self._patient(patient)
        checked = [self._allergy_entry(entry) for entry in entries]
        for allergenid, criticality, reactions, note in checked:
            self._upsert_allergy(patient_id, allergenid, criticality, reactions, note)
        return json_response(200, {"success": True})

    def _allergy_entry(self, entry: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]], str]:
        allergenid = str(entry.get("allergenid", ""))
        if allergenid not in ALLERGENS_BY_ID:
            raise Failure(f"Invalid allergenid {allergenid!r}; look it up in /reference/allergies")
        criticality = str(entry.get("criticality", "")).lower()
        if criticality and criticality not in CRITICALITIES:
            raise Failure(f"Invalid criticality {entry['criticality']!r}")
        reactions = []
        for item in entry.get("reactions") or []:
            severity = str(item.get("severity", "")).lower() if isinstance(item, dict) else ""
            if (
                not isinstance(item, dict)
                or not item.get("reactionname")
                or (severity and severity not in SEVERITIES)
            ):
                raise Failure(f"Invalid reaction {item!r}")
            reactions.append(
                chart_items.reaction(str(item["reactionname"]), str(item.get("snomedcode", "")), severity)
            )
        return allergenid, criticality, reactions, str(entry.get("note", ""))

    def _upsert_allergy(
        self, patient_id: str, allergenid: str, criticality: str, reactions: list[dict[str, Any]], note: str
    ) -> None:
        """athena's PUT upserts by allergen: an allergy already on the chart gets the new reactions merged."""
        existing = [
            r
            for r in self.store.all_current("AllergyIntolerance")
            if (r.get("patient") or {}).get("reference") == f"Patient/{patient_id}"
            and {"system": ALLERGEN_SYSTEM, "code": allergenid} in (r.get("code") or {}).get("coding", [])
        ]
        if not existing:
            allergen = ALLERGENS_BY_ID[allergenid]
            code = {
                "coding": [
                    {"system": RXNORM, "code": allergen.rxnorm, "display": allergen.name},
                    {"system": ALLERGEN_SYSTEM, "code": allergenid},
                ],
                "text": allergen.name,
            }
            self._store(chart_items.allergy(patient_id, code, criticality, reactions, note), "Allergy")
            return

        def merge(current: Resource) -> Resource:
            known = current.setdefault("reaction", [])
            known += [r for r in reactions if r not in known]
            if criticality:
                current["criticality"] = criticality
            notes = current.setdefault("note", [])
            if note and {"text": note} not in notes:
                notes.append({"text": note})  # every write's marker stays findable
            return current

        self.store.modify("AllergyIntolerance", existing[0]["id"], merge)

    def medication(self, req: Request, patient: str) -> Response:
        form = self._form(req, "departmentid", "medicationid")
        patient_id = self._patient(patient)
        drug = MEDICATIONS_BY_ID.get(form["medicationid"].strip())
        if drug is None:
            raise Failure(
                f"Invalid medicationid {form['medicationid']!r}; look it up in /reference/medications"
            )
        started = parse_date(form["startdate"], "startdate") if form.get("startdate") else ""
        statement = chart_items.medication(
            patient_id,
            drug.rxnorm,
            drug.name,
            "active",
            form.get("unstructuredsig", ""),
            started,
            form.get("note", ""),
        )
        return json_response(
            200, {"success": True, "medicationentryid": self._store(statement, "MedicationEntry")}
        )

    def clinical_document(self, req: Request, patient: str) -> Response:
        form = self._form(req, "departmentid", "documentsubclass", "documenttypeid", "attachmentcontents")
        patient_id = self._patient(patient)
        if form["documentsubclass"] != "CLINICALDOCUMENT":
            raise Failure(f"documentsubclass must be CLINICALDOCUMENT, got {form['documentsubclass']!r}")
        type_id = form["documenttypeid"]
        note_type = {
            "coding": [{"system": DOCUMENT_TYPE_SYSTEM, "code": type_id}],
            "text": f"Clinical document {type_id}",
        }
        final = form.get("autoclose", "").lower() == "true"
        document = chart_items.clinical_note(
            patient_id, note_type, form["attachmentcontents"], form.get("internalnote", ""), final=final
        )
        return json_response(
            200, {"success": True, "clinicaldocumentid": self._store(document, "ClinicalDocument")}
        )

    def demographics(self, req: Request, patient: str) -> Response:
        form = self._form(req)
        patient_id = self._patient(patient)
        phones = {
            use: form[field]
            for use, field in (("mobile", "mobilephone"), ("home", "homephone"))
            if form.get(field)
        }
        address_fields = {k: form[k] for k in ("address1", "address2", "city", "state", "zip") if form.get(k)}
        if not phones and not address_fields:
            raise Failure("Nothing to update")
        for value in phones.values():
            if not PHONE.match(value):
                raise Failure(f"Invalid phone number {value!r}")
        if "zip" in address_fields and not ZIP.match(address_fields["zip"]):
            raise Failure(f"Invalid zip {address_fields['zip']!r}")
        if "state" in address_fields and not re.fullmatch(r"[A-Za-z]{2}", address_fields["state"]):
            raise Failure(f"Invalid state {address_fields['state']!r}")

        def change(current: Resource) -> Resource:
            telecom = [
                t
                for t in current.get("telecom", [])
                if not (t.get("system") == "phone" and t.get("use") in phones)
            ]
            current["telecom"] = telecom + [
                {"system": "phone", "value": v, "use": u} for u, v in phones.items()
            ]
            if address_fields:
                addresses = current.get("address") or [{"use": "home"}]
                home = next((a for a in addresses if a.get("use") == "home"), addresses[0])
                lines = list(home.get("line") or [])
                for index, key in enumerate(("address1", "address2")):
                    if key in address_fields:
                        lines[index : index + 1] = [address_fields[key]]
                home["line"] = lines
                for key, fhir_key in (("city", "city"), ("state", "state"), ("zip", "postalCode")):
                    if key in address_fields:
                        home[fhir_key] = address_fields[key]
                current["address"] = addresses
            return current

        self.store.modify("Patient", patient_id, change)
        return json_response(200, [{"patientid": patient}])

    def allergen_lookup(self, req: Request) -> Response:
        search = self._search_value(req)
        return json_response(
            200, [{"allergenid": a.allergenid, "allergenname": a.name} for a in lookup(ALLERGENS, search)]
        )

    def medication_lookup(self, req: Request) -> Response:
        found = lookup(MEDICATIONS, self._search_value(req))
        return json_response(
            200, [{"medicationid": m.medicationid, "medication": m.name, "rxnorm": m.rxnorm} for m in found]
        )

    @staticmethod
    def _search_value(req: Request) -> str:
        search = req.param("searchvalue").strip()
        if len(search) < 2:
            raise RequestError(
                400, "Additional fields are required.", "searchvalue needs at least 2 characters"
            )
        return search
