"""athenaOne v1 REST: our intended FHIR resources as form-encoded chart writes (docs/wire-formats.md).

Every function returns a `V1Write`: the request, the FHIR form of what athena will hold afterwards
(read-back and the contract tests compare it with what athena's FHIR API serves), and where athena's
answer puts the new id. What v1 cannot carry is a refusal (`problems()`), never silently dropped.

v1 has no FHIR identifier, so the marker `[wb:<write uid>]` goes into the write's note field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.base import TargetConfig, WriteRequest
from adapters.compensation import document_text
from adapters.fhir_rest import api_root, first_coding, patient_id
from adapters.http import RequestSpec
from adapters.identifiers import with_marker

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"

# LOINC -> (athena clinicalelementid, the unit athena records it in).
VITAL_ELEMENTS = {
    "29463-7": ("VITALS.WEIGHT", "kg"),
    "8302-2": ("VITALS.HEIGHT", "cm"),
    "8310-5": ("VITALS.TEMPERATURE", "Cel"),
    "8867-4": ("VITALS.HEARTRATE", "/min"),
    "9279-1": ("VITALS.RESPIRATIONRATE", "/min"),
    "59408-5": ("VITALS.INO2SATURATION", "%"),
    "2708-6": ("VITALS.INO2SATURATION", "%"),
    SYSTOLIC: ("VITALS.BLOODPRESSURE.SYSTOLIC", "mm[Hg]"),
    DIASTOLIC: ("VITALS.BLOODPRESSURE.DIASTOLIC", "mm[Hg]"),
}
# athena's v1 demographics take these phone kinds only.
PHONE_FIELDS = {"mobile": "mobilephone", "home": "homephone"}


@dataclass
class V1Write:
    spec: RequestSpec
    sent: dict[str, Any]
    kind: str = ""  # the FHIR id kind athena gives the item: a-{practiceid}.{kind}-{id}
    id_key: str = ""  # the answer's key holding the new id
    lookups: list[RequestSpec] = field(default_factory=list)  # reference lookups made first (plans)


class V1:
    """URLs and ids of one athena practice."""

    def __init__(self, target: TargetConfig) -> None:
        self.practice_id = str(target.settings.get("practice_id") or "")
        self.department_id = str(target.settings.get("department_id") or "")
        self.document_type_id = str(target.settings.get("document_type_id") or "")
        # athena takes reading times on the practice's clock ([U]: UTC unless the tenant names a zone).
        self.zone_name = str(target.settings.get("practice_timezone") or "UTC")
        try:
            self.zone: tzinfo = ZoneInfo(self.zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = UTC
            self.zone_name = ""
        self.root = f"{api_root(target)}/v1/{self.practice_id}"

    def url(self, path: str) -> str:
        return f"{self.root}/{path.lstrip('/')}"

    def fhir_id(self, kind: str, number: str) -> str:
        return f"a-{self.practice_id}.{kind}-{number}"

    def athena_patient(self, req: WriteRequest) -> str:
        """athena's patient id: the number in `a-{practiceid}.E-{n}`, else the id itself."""
        pid = patient_id(req)
        match = re.fullmatch(rf"a-{re.escape(self.practice_id)}\.E-(\d+)", pid)
        return match[1] if match else pid

    def form(self, **fields: str) -> dict[str, str]:
        return {"departmentid": self.department_id, **{k: v for k, v in fields.items() if v != ""}}

    def post(self, path: str, form: dict[str, str], method: str = "POST") -> RequestSpec:
        return RequestSpec(method, self.url(path), form=form, fhir=False)


# --- helpers -----------------------------------------------------------------------------------------


def _codes(concept: Any) -> set[str]:
    return {c.get("code", "") for c in (concept or {}).get("coding") or [] if isinstance(c, dict)}


def _note_text(resource: dict[str, Any]) -> str:
    return " ".join(str(n.get("text", "")) for n in resource.get("note") or [] if isinstance(n, dict)).strip()


def _moment(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def reading_time(value: str, zone: tzinfo = UTC) -> tuple[str, str]:
    """(athena's `MM/DD/YYYY HH:MM` on the practice's clock, the same instant in FHIR, UTC) for a
    reading's effective time."""
    moment = _moment(value)
    if moment is None:
        raise ValueError(f"effective time {value!r} has no timezone")
    local = moment.astimezone(zone)
    spelled = local.strftime("%m/%d/%Y %H:%M" + (":%S" if local.second else ""))
    return spelled, moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def athena_date(value: str) -> tuple[str, str]:
    """('MM/DD/YYYY', 'YYYY-MM-DD') for a FHIR date or dateTime (its local date)."""
    day = str(value)[:10]
    parsed = datetime.strptime(day, "%Y-%m-%d")
    return parsed.strftime("%m/%d/%Y"), day


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _subject(req: WriteRequest) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id(req)}"}


# --- refusals ----------------------------------------------------------------------------------------


def problems(req: WriteRequest, v1: V1) -> str | None:
    """Why athena v1 cannot take this write as it is, or None."""
    if not v1.practice_id or not v1.department_id:
        return "athena needs settings practice_id and department_id for chart writes"
    if not v1.zone_name:
        return "athena's settings practice_timezone is not a known time zone (e.g. America/Chicago)"
    resource = req.resource or {}
    rtype = req.resource_type
    if rtype == "Observation":
        readings = _readings(resource)
        if not readings:
            return "athena v1 has no vitals element for this code"
        for loinc, quantity in readings:
            element, unit = VITAL_ELEMENTS[loinc]
            if (quantity or {}).get("code") != unit:
                return (
                    f"athena records {element} in {unit}, this reading is in {(quantity or {}).get('code')}"
                )
        if _moment(str(resource.get("effectiveDateTime", ""))) is None:
            return "athena needs the reading's time with a timezone"
    elif rtype == "Condition":
        if first_coding(resource).get("system") != SNOMED:
            return "athena v1 problems take a SNOMED CT code"
        if _codes(resource.get("clinicalStatus")) - {"active"}:
            return "athena v1 records active problems only; change a problem's status in athenaOne"
    elif rtype == "AllergyIntolerance":
        if first_coding(resource).get("system") != RXNORM:
            return "athena's allergen lookup needs an RxNorm code"
    elif rtype == "MedicationStatement":
        if first_coding(resource).get("system") != RXNORM:
            return "athena's medication lookup needs an RxNorm code"
        if resource.get("status") != "active":
            status = resource.get("status")
            return f"athena v1 adds active medications only; a {status} medication is changed in athenaOne"
    elif rtype == "DocumentReference":
        if resource.get("relatesTo"):
            return "athena's clinical documents cannot replace an earlier document; amend it in athenaOne"
        if not v1.document_type_id:
            return "athena needs settings document_type_id (the practice's clinical document type)"
        if not document_text(resource):
            return "athena's clinical document takes one text attachment"
    elif rtype == "Patient":
        return demographics_problem(resource)
    return None


def demographics_problem(resource: dict[str, Any]) -> str | None:
    for telecom in resource.get("telecom") or []:
        if telecom.get("system") != "phone" or telecom.get("use") not in PHONE_FIELDS:
            return "athena v1 demographics take mobile and home phone numbers only"
    uses = [t.get("use") for t in resource.get("telecom") or []]
    if len(uses) != len(set(uses)):
        return "athena keeps one mobile and one home phone number"
    addresses = resource.get("address") or []
    if len(addresses) > 1:
        return "athena keeps one address per patient"
    if addresses and len(addresses[0].get("line") or []) > 2:
        return "athena takes at most two address lines"
    return None


# --- translations ------------------------------------------------------------------------------------


def _readings(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(LOINC, quantity) per athena reading: a blood pressure panel is its two components."""
    components = resource.get("component") or []
    if components:
        found = [(first_coding(c, "code").get("code", ""), c.get("valueQuantity") or {}) for c in components]
        return found if {code for code, _ in found} == {SYSTOLIC, DIASTOLIC} else []
    loinc = next(
        (
            c["code"]
            for c in (resource.get("code") or {}).get("coding") or []
            if c.get("code") in VITAL_ELEMENTS
        ),
        "",
    )
    return [(loinc, resource.get("valueQuantity") or {})] if loinc else []


def vitals(req: WriteRequest, v1: V1) -> V1Write:
    resource = req.resource or {}
    spelled, instant = reading_time(str(resource["effectiveDateTime"]), v1.zone)
    note = with_marker(_note_text(resource), req.write_uid)
    group = [
        {
            "clinicalelementid": VITAL_ELEMENTS[loinc][0],
            "value": _number(quantity.get("value")),
            "readingtaken": spelled,
            "note": note,
        }
        for loinc, quantity in _readings(resource)
    ]
    form = v1.form(source="DEVICEGENERATED", returnvitalids="true", vitals=json.dumps([group]))
    spec = v1.post(f"chart/{v1.athena_patient(req)}/vitals", form)
    sent: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": first_coding(resource).get("code")}]},
        "subject": _subject(req),
        "effectiveDateTime": instant,
        "note": [{"text": note}],
    }
    if resource.get("component"):
        sent["component"] = [
            {
                "code": {"coding": [{"system": LOINC, "code": loinc}]},
                "valueQuantity": {"value": q.get("value"), "system": UCUM, "code": q.get("code")},
            }
            for loinc, q in _readings(resource)
        ]
    else:
        q = resource.get("valueQuantity") or {}
        sent["valueQuantity"] = {"value": q.get("value"), "system": UCUM, "code": q.get("code")}
    return V1Write(spec, sent, kind="Vitals", id_key="vitalids")


def problem(req: WriteRequest, v1: V1) -> V1Write:
    resource = req.resource or {}
    snomed = first_coding(resource)["code"]
    note = with_marker(_note_text(resource), req.write_uid)
    fields: dict[str, str] = {"snomedcode": snomed, "status": "CHRONIC", "note": note}
    sent: dict[str, Any] = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": SNOMED, "code": snomed}]},
        "subject": _subject(req),
        "note": [{"text": note}],
    }
    if resource.get("onsetDateTime"):
        fields["startdate"], sent["onsetDateTime"] = athena_date(resource["onsetDateTime"])
    spec = v1.post(f"chart/{v1.athena_patient(req)}/problems", v1.form(**fields))
    return V1Write(spec, sent, kind="Problem", id_key="problemid")


def allergen_lookup(v1: V1, resource: dict[str, Any]) -> RequestSpec:
    return RequestSpec(
        "GET",
        v1.url("reference/allergies"),
        params={"searchvalue": first_coding(resource)["code"]},
        fhir=False,
    )


def medication_lookup(v1: V1, resource: dict[str, Any]) -> RequestSpec:
    return RequestSpec(
        "GET",
        v1.url("reference/medications"),
        params={"searchvalue": first_coding(resource)["code"]},
        fhir=False,
    )


def _reaction(reaction: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(athena's reaction entry, the FHIR reaction athena holds afterwards) for one FHIR reaction."""
    manifestation = (reaction.get("manifestation") or [{}])[0]
    coding = next((c for c in manifestation.get("coding") or [] if isinstance(c, dict)), {})
    name = coding.get("display") or manifestation.get("text") or coding.get("code", "")
    entry = {"reactionname": name, "snomedcode": coding.get("code", "")}
    fhir: dict[str, Any] = {
        "manifestation": [{"coding": [{"system": SNOMED, "code": coding.get("code", "")}]}]
    }
    if reaction.get("severity"):
        entry["severity"] = reaction["severity"]
        fhir["severity"] = reaction["severity"]
    return entry, fhir


def allergy(req: WriteRequest, v1: V1, allergenid: str) -> V1Write:
    resource = req.resource or {}
    note = with_marker(_note_text(resource), req.write_uid)
    reactions = [_reaction(r) for r in resource.get("reaction") or []]
    entry: dict[str, Any] = {"allergenid": allergenid, "note": note}
    if resource.get("criticality"):
        entry["criticality"] = resource["criticality"]
    if reactions:
        entry["reactions"] = [athena for athena, _ in reactions]
    spec = v1.post(f"chart/{v1.athena_patient(req)}/allergies", v1.form(allergies=json.dumps([entry])), "PUT")
    sent: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": RXNORM, "code": first_coding(resource)["code"]}]},
        "patient": _subject(req),
        "note": [{"text": note}],
    }
    if resource.get("criticality"):
        sent["criticality"] = resource["criticality"]
    if reactions:
        sent["reaction"] = [fhir for _, fhir in reactions]
    return V1Write(spec, sent, kind="Allergy")


def medication(req: WriteRequest, v1: V1, medicationid: str) -> V1Write:
    resource = req.resource or {}
    note = with_marker(_note_text(resource), req.write_uid)
    sig = "; ".join(d.get("text", "") for d in resource.get("dosage") or [] if d.get("text"))
    fields = {"medicationid": medicationid, "unstructuredsig": sig, "note": note}
    sent: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": first_coding(resource)["code"]}]},
        "subject": _subject(req),
        "note": [{"text": note}],
    }
    if sig:
        sent["dosage"] = [{"text": sig}]
    if resource.get("effectiveDateTime"):
        fields["startdate"], sent["effectiveDateTime"] = athena_date(resource["effectiveDateTime"])
    spec = v1.post(f"chart/{v1.athena_patient(req)}/medications", v1.form(**fields))
    return V1Write(spec, sent, kind="MedicationEntry", id_key="medicationentryid")


def clinical_document(req: WriteRequest, v1: V1) -> V1Write:
    resource = req.resource or {}
    text = document_text(resource)
    internal = with_marker(str(resource.get("description") or ""), req.write_uid)
    form = v1.form(
        documentsubclass="CLINICALDOCUMENT",
        documenttypeid=v1.document_type_id,
        attachmentcontents=text,
        internalnote=internal,
        autoclose="true",
    )
    spec = v1.post(f"patients/{v1.athena_patient(req)}/documents/clinicaldocument", form)
    sent = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "subject": _subject(req),
        "description": internal,
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": resource["content"][0]["attachment"]["data"],
                }
            }
        ],
    }
    return V1Write(spec, sent, kind="ClinicalDocument", id_key="clinicaldocumentid")


def demographics(req: WriteRequest, v1: V1, values: dict[str, Any], current: dict[str, Any]) -> V1Write:
    """PUT /patients/{id} with the phones and address in `values`; `sent` is `current` as athena will
    hold it afterwards: v1 updates the given phone kinds and the home address field by field."""
    fields: dict[str, str] = {}
    for telecom in values.get("telecom") or []:
        fields[PHONE_FIELDS[telecom["use"]]] = telecom["value"]
    address = (values.get("address") or [None])[0]
    if address:
        lines = address.get("line") or []
        for index, key in enumerate(("address1", "address2")):
            if index < len(lines):
                fields[key] = lines[index]
        for source, key in (("city", "city"), ("state", "state"), ("postalCode", "zip")):
            if address.get(source):
                fields[key] = address[source]
    spec = RequestSpec("PUT", v1.url(f"patients/{v1.athena_patient(req)}"), form=fields, fhir=False)
    return V1Write(spec, predict_demographics(current, values), kind="")


def predict_demographics(current: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    phones = {t["use"]: t["value"] for t in values.get("telecom") or []}
    telecom = [
        t for t in current.get("telecom") or [] if not (t.get("system") == "phone" and t.get("use") in phones)
    ]
    telecom += [{"system": "phone", "value": value, "use": use} for use, value in phones.items()]
    predicted: dict[str, Any] = {"resourceType": "Patient", "id": current.get("id"), "telecom": telecom}
    address = (values.get("address") or [None])[0]
    addresses = [dict(a) for a in current.get("address") or []]
    if address:
        addresses = addresses or [{"use": "home"}]
        home = next((a for a in addresses if a.get("use") == "home"), addresses[0])
        lines = list(home.get("line") or [])
        for index, line in enumerate((address.get("line") or [])[:2]):
            lines[index : index + 1] = [line]
        home["line"] = lines
        for key in ("city", "state", "postalCode"):
            if address.get(key):
                home[key] = address[key]
    if addresses:
        predicted["address"] = addresses
    return predicted


def cannot_clear(current: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """Phone kinds a restore would have to remove: athena v1 sets values but never clears them."""
    wanted = {t.get("use") for t in values.get("telecom") or []}
    held = {t.get("use") for t in current.get("telecom") or [] if t.get("use") in PHONE_FIELDS}
    return sorted(str(use) for use in held - wanted)
