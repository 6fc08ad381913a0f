"""The default contract matrix (spec/events.md): one row per resource type we write.

Loaded by a data migration; integration engineers narrow it per tenant through capabilities.
`writable_fields` is the field-level source of truth: top-level FHIR elements we may set. Everything
else on the resource is EHR-authoritative and never written (for Patient: name, birthDate, gender,
identifier and the rest of the demographics the EHR owns).
"""

from writeback.fhir_mapping.authors import AUTHOR_ELEMENTS

DEFAULT_CONTRACT = [
    {
        "resource_type": "Observation",
        "event_type": "vitals.recorded",
        "pattern": "append_only",
        "operations": ["create", "compensate"],
        "writable_fields": [
            "identifier",
            "status",
            "category",
            "code",
            "subject",
            "encounter",
            "effectiveDateTime",
            "valueQuantity",
            "component",
            "device",
            "note",
        ],
        "risk": "low",
        "approval_required": False,
    },
    {
        "resource_type": "QuestionnaireResponse",
        "event_type": "intake.completed",
        "pattern": "append_only",
        "operations": ["create", "compensate"],
        "writable_fields": [
            "identifier",
            "questionnaire",
            "status",
            "subject",
            "encounter",
            "authored",
            "item",
        ],
        "risk": "low",
        "approval_required": False,
    },
    {
        "resource_type": "DocumentReference",
        "event_type": "note.signed",
        "pattern": "append_only",
        "operations": ["create", "compensate"],
        "writable_fields": [
            "identifier",
            "status",
            "docStatus",
            "type",
            "category",
            "subject",
            "date",
            "description",
            "content",
            "context",
            "relatesTo",
        ],
        "risk": "medium",
        "approval_required": False,
    },
    {
        "resource_type": "Condition",
        "event_type": "problem.confirmed",
        "pattern": "create_only",
        "operations": ["create", "compensate"],
        "writable_fields": [
            "identifier",
            "clinicalStatus",
            "verificationStatus",
            "category",
            "code",
            "subject",
            "encounter",
            "onsetDateTime",
            "recordedDate",
            "note",
        ],
        "risk": "medium",
        "approval_required": False,
    },
    {
        "resource_type": "Patient",
        "event_type": "demographics.updated",
        "pattern": "patch_with_version",
        "operations": ["update", "patch", "compensate"],
        "writable_fields": ["telecom", "address"],
        "risk": "medium",
        "approval_required": False,
    },
    {
        "resource_type": "Task",
        "event_type": "referral.status_changed",
        "pattern": "two_phase_surrogate",
        "operations": ["update", "patch", "compensate"],
        "writable_fields": ["status", "lastModified"],
        "risk": "high",
        "approval_required": False,
    },
    {
        "resource_type": "AllergyIntolerance",
        "event_type": "allergy.recorded",
        "pattern": "human_approval",
        "operations": ["create", "compensate"],
        "writable_fields": [
            "identifier",
            "clinicalStatus",
            "verificationStatus",
            "type",
            "category",
            "criticality",
            "code",
            "patient",
            "encounter",
            "recordedDate",
            "reaction",
            "note",
        ],
        "risk": "high",
        "approval_required": True,
    },
    {
        "resource_type": "MedicationStatement",
        "event_type": "medication.reconciled",
        "pattern": "human_approval",
        "operations": ["create", "compensate"],
        "writable_fields": [
            "identifier",
            "status",
            "medicationCodeableConcept",
            "subject",
            "context",
            "effectiveDateTime",
            "dateAsserted",
            "dosage",
            "note",
        ],
        "risk": "very_high",
        "approval_required": True,
    },
]

PROVENANCE_RULE = {
    "resource_type": "Provenance",
    "event_type": "*",
    "pattern": "append_only",
    "operations": ["create"],
    "writable_fields": ["target", "recorded", "activity", "agent", "entity"],
    "risk": "low",
    # It attests what the event's approved writes did and carries no clinical content of its own.
    "approval_required": False,
}
DEFAULT_CONTRACT.append(PROVENANCE_RULE)

# The author elements (US Core small-p provenance) are ours to write on every type that has one.
for _row in DEFAULT_CONTRACT:
    _row["writable_fields"] += [
        f for f in AUTHOR_ELEMENTS.get(_row["resource_type"], ()) if f not in _row["writable_fields"]
    ]

# People's roles, and `client_app`: the service account a client app posts events with (never a person).
ROLES = ["clinician", "admin", "integration_engineer", "auditor", "client_app"]


def install_defaults(group_model, rule_model) -> None:
    """Creates the roles and the default contract rows that are missing (the data migration, and test
    databases emptied by a flush). Existing rows are left as engineers changed them."""
    for name in ROLES:
        group_model.objects.get_or_create(name=name)
    for row in DEFAULT_CONTRACT:
        rule_model.objects.get_or_create(resource_type=row["resource_type"], defaults=row)
