"""Console forms: parse and check what people type; the services decide what it means."""

from typing import Any

import django_filters
from django import forms

from console.preferences import is_zone, zone_choices
from writeback.api import body
from writeback.filters import WriteFilter
from writeback.models import ContractRule, KillSwitch, Risk, TenantMode
from writeback.services.bulk import DEFAULT_RATE, MAX_RATE, MIN_RATE
from writeback.services.capabilities import OPERATIONS
from writeback.services.policy import CHECKLIST
from writeback.services.replay import MODES
from writeback.states import WriteState

TEXTAREA = {"rows": 3}


def resource_type_choices(blank: str = "Any resource type") -> list[tuple[str, str]]:
    return [("", blank), *[(t, t) for t in ContractRule.resource_types()]]


def _json_object(text: str, what: str) -> dict[str, Any]:
    """JSON typed into a form passes the same gate as the API's bodies (depth, characters, lengths)."""
    try:
        value = body.parse_json(text, kind=body.FORMS, what=what)
    except body.BodyRefused as exc:
        # Parse errors name the field already; a refused value inside the JSON names its path.
        raise forms.ValidationError(f"{what}: {exc}." if exc.path else f"{_capital(str(exc))}.")
    if not isinstance(value, dict):
        raise forms.ValidationError(f"{what} must be a JSON object, {{...}}.")
    return value


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


class TimezoneForm(forms.Form):
    """Any IANA zone. A text value checked against zoneinfo (not only the listed choices), so a zone
    the browser reported under an older name ("Asia/Calcutta") is accepted too."""

    tz = forms.CharField(
        label="Time zone",
        max_length=64,
        help_text="Every time in the console is shown in this zone. Type to jump to a city.",
    )
    next = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, current: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = zone_choices()
        if current and not _listed(current, choices):  # e.g. a detected alias
            choices.insert(0, (current, current))
        self.fields["tz"].widget = forms.Select(choices=choices)

    def clean_tz(self) -> str:
        value = self.cleaned_data["tz"].strip()
        if not is_zone(value):
            raise forms.ValidationError("“%(zone)s” is not a time zone we know.", params={"zone": value[:64]})
        return value


def _listed(zone: str, choices) -> bool:
    for value, label in choices:
        if isinstance(label, list):
            if any(zone == v for v, _ in label):
                return True
        elif zone == value:
            return True
    return False


RANGES = [
    ("", "Any time"),
    ("1h", "Last hour"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
]


class ConsoleWriteFilter(WriteFilter):
    """The API's WriteFilter with the console's widgets: tenant and type pickers, a time range."""

    tenant = django_filters.ChoiceFilter(field_name="tenant__slug", label="Tenant", empty_label="All tenants")
    resource_type = django_filters.ChoiceFilter(label="Resource type", empty_label="Any resource type")
    state = django_filters.MultipleChoiceFilter(
        choices=WriteState.choices, label="State", widget=forms.CheckboxSelectMultiple, distinct=False
    )
    risk = django_filters.MultipleChoiceFilter(
        choices=Risk.choices, label="Risk", widget=forms.CheckboxSelectMultiple, distinct=False
    )
    patient = django_filters.CharFilter(field_name="patient_ref", label="Patient id")
    source_kind = django_filters.ChoiceFilter(
        field_name="event__source_kind",
        choices=[("human", "A person"), ("automation", "Automation"), ("ai", "AI")],
        label="Proposed by",
        empty_label="Anyone",
    )
    range = django_filters.ChoiceFilter(
        choices=RANGES[1:], method="in_range", label="Time range", empty_label="Any time"
    )
    since = django_filters.IsoDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        label="From",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = django_filters.IsoDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        label="Until",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    q = django_filters.CharFilter(method="search", label="Search")

    class Meta(WriteFilter.Meta):
        fields = [
            "q", "tenant", "patient", "resource_type", "source_kind",
            "state", "risk", "range", "since", "until",
        ]  # fmt: skip

    def __init__(self, *args, tenants=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.filters["tenant"].extra["choices"] = [(t.slug, t.slug) for t in tenants]
        self.filters["resource_type"].extra["choices"] = resource_type_choices()[1:]

    def in_range(self, queryset, name, value):
        from datetime import timedelta

        from django.utils import timezone

        span = {
            "1h": timedelta(hours=1),
            "24h": timedelta(hours=24),
            "7d": timedelta(days=7),
            "30d": timedelta(days=30),
        }
        return queryset.filter(created_at__gte=timezone.now() - span[value]) if value in span else queryset


class RationaleForm(forms.Form):
    rationale = forms.CharField(
        label="Rationale",
        max_length=2000,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="Required. Kept with the decision in the audit trail.",
    )


class NoteForm(forms.Form):
    note = forms.CharField(label="Note", max_length=4000, widget=forms.Textarea(attrs=TEXTAREA))


class ReasonConfirmForm(forms.Form):
    reason = forms.CharField(label="Reason", max_length=2000, widget=forms.Textarea(attrs=TEXTAREA))
    confirm = forms.BooleanField(
        label="I have checked the compensating action above and want it written to the EHR", required=True
    )


class CorrectionForm(forms.Form):
    data = forms.CharField(
        label="Corrected values (JSON object of FHIR elements)",
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"}),
    )
    reason = forms.CharField(label="Clinical reason", max_length=2000, widget=forms.Textarea(attrs=TEXTAREA))

    def clean_data(self) -> dict[str, Any]:
        value = _json_object(self.cleaned_data["data"], "The corrected value")
        if not value:
            raise forms.ValidationError("Give at least one corrected element.")
        return value


class CorrectionConfirmForm(CorrectionForm):
    confirm = forms.BooleanField(
        label="I have checked the corrected entry and the compensating requests above", required=True
    )


class ReplayForm(forms.Form):
    mode = forms.ChoiceField(
        label="Mode",
        choices=[
            ("resend", "Resend: the same request again"),
            ("rederive", "Re-derive: the stored event through today's mapping"),
            ("edit", "Edit: send an edited payload"),
        ],
        widget=forms.RadioSelect,
        initial="resend",
    )
    payload = forms.CharField(
        label="Edited payload (FHIR JSON; edit mode only)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "code"}),
    )
    shadow = forms.BooleanField(
        label="Shadow only: compare with the EHR, write nothing", required=False, initial=False
    )
    scope = forms.ChoiceField(
        label="Scope",
        choices=[
            ("write", "This write"),
            ("event", "Every write of its event (what is in the chart or still queued is left alone)"),
        ],
        widget=forms.RadioSelect,
        initial="write",
        required=False,
    )
    reason = forms.CharField(label="Reason", max_length=2000, widget=forms.Textarea(attrs=TEXTAREA))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["scope"] = data.get("scope") or "write"
        if data.get("mode") not in MODES:
            return data
        if data["scope"] == "event" and data.get("mode") == "edit":
            self.add_error("scope", "An edited payload replays one write: choose this write.")
            return data
        if data.get("mode") == "edit":
            text = (data.get("payload") or "").strip()
            if not text:
                self.add_error("payload", "Edit mode needs the edited payload.")
            else:
                try:
                    data["payload"] = _json_object(text, "The payload")
                except forms.ValidationError as exc:
                    self.add_error("payload", exc)
        else:
            data["payload"] = None
        return data


class ModeForm(forms.Form):
    mode = forms.ChoiceField(label="Mode", choices=TenantMode.choices)
    reason = forms.CharField(label="Reason", max_length=1000)


class KillSwitchForm(forms.Form):
    scope = forms.ChoiceField(label="Level", choices=KillSwitch.Scope.choices)
    tenant = forms.CharField(required=False, widget=forms.HiddenInput)
    resource_type = forms.ChoiceField(label="Resource type", required=False)
    patient_ref = forms.CharField(label="Patient id", required=False, max_length=128)
    behaviour = forms.ChoiceField(
        label="Behaviour", choices=KillSwitch.Behaviour.choices, widget=forms.RadioSelect, initial="hold"
    )
    reason = forms.CharField(label="Reason", max_length=1000)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["resource_type"].choices = resource_type_choices("Choose…")


class CapabilityRequestForm(forms.Form):
    resource_type = forms.ChoiceField(label="Resource type")
    operation = forms.ChoiceField(label="Operation", choices=[(o, o) for o in OPERATIONS])
    allowed = forms.TypedChoiceField(
        label="Change to",
        choices=[
            ("1", "Allow (widens: needs a second engineer)"),
            ("0", "Refuse (narrows: applies at once)"),
        ],
        coerce=lambda v: v == "1",
        widget=forms.RadioSelect,
    )
    note = forms.CharField(label="Reason", max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["resource_type"].choices = resource_type_choices("Choose…")[1:]


def _csv(value: str) -> list[str] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


class PolicyForm(forms.Form):
    """A change of the tenant's policy for one resource type; blank fields stay as they are."""

    resource_type = forms.ChoiceField(label="Resource type")
    approval = forms.TypedChoiceField(
        label="Clinician approval",
        choices=[("", "Unchanged"), ("1", "Required (narrows)"), ("0", "Not required (widens)")],
        coerce=lambda v: v == "1",
        empty_value=None,
        required=False,
    )
    risk = forms.ChoiceField(label="Risk", choices=[("", "Unchanged"), *Risk.choices], required=False)
    operations = forms.CharField(
        label="Operations (comma-separated)",
        required=False,
        max_length=500,
        help_text="within the contract row's",
    )
    writable_fields = forms.CharField(
        label="Writable fields (comma-separated)",
        required=False,
        max_length=2000,
        help_text="within the contract row's",
    )
    note = forms.CharField(label="Reason", max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["resource_type"].choices = resource_type_choices("Choose…")[1:]

    def changes(self) -> dict:
        data = self.cleaned_data
        return {
            "approval_required": data.get("approval"),
            "risk": data.get("risk") or None,
            "operations": _csv(data.get("operations", "")),
            "writable_fields": _csv(data.get("writable_fields", "")),
        }


class PolicyApproveForm(forms.Form):
    checklist = forms.MultipleChoiceField(
        label="Review checklist", choices=list(CHECKLIST.items()), widget=forms.CheckboxSelectMultiple
    )
    note = forms.CharField(label="Note", required=False, max_length=2000)


class TestReplayForm(forms.Form):
    target = forms.SlugField(label="Test tenant", max_length=64)
    scope = forms.ChoiceField(label="What", choices=[("write", "This write"), ("event", "Its whole event")])
    reason = forms.CharField(label="Why", max_length=2000)


class BulkStartForm(forms.Form):
    reason = forms.CharField(label="Reason", max_length=2000, widget=forms.Textarea(attrs=TEXTAREA))
    rate = forms.FloatField(
        label="Rate (writes per second)",
        min_value=MIN_RATE,
        max_value=MAX_RATE,
        initial=DEFAULT_RATE,
        widget=forms.NumberInput(attrs={"step": "0.1"}),
    )


class AuditSearchForm(forms.Form):
    action = forms.CharField(label="Action", required=False, max_length=64)
    tenant = forms.ChoiceField(label="Tenant", required=False)
    object_id = forms.CharField(label="Write or event id", required=False, max_length=64)
    correlation_id = forms.CharField(label="Correlation id", required=False, max_length=64)
    actor = forms.CharField(label="Actor", required=False, max_length=150)
    since = forms.DateTimeField(
        label="From", required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        label="Until", required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def __init__(self, *args, tenants=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [("", "All tenants"), *[(t.slug, t.slug) for t in tenants]]


def conflict_choices(diff: list[dict], data) -> tuple[dict[str, Any], dict[int, str]]:
    """Reads the per-field choices of the reconciliation form: "ours", "theirs", or a typed JSON value.
    Returns (choices by path, errors by row index)."""
    choices: dict[str, Any] = {}
    errors: dict[int, str] = {}
    for i, row in enumerate(diff):
        path = row["path"]
        choice = data.get(f"choice-{i}", "")
        if choice in ("ours", "theirs"):
            choices[path] = choice
        elif choice == "value":
            text = (data.get(f"value-{i}") or "").strip()
            if not text:
                errors[i] = "Type the value to write (JSON), or choose ours or theirs."
                continue
            try:
                choices[path] = {"value": body.parse_json(text, kind=body.FORMS, what="the value")}
            except body.BodyRefused as exc:
                hint = " Strings need double quotes." if exc.rule == "invalid-json" else ""
                errors[i] = f"{_capital(str(exc))}.{hint}"
        elif row.get("changed") in ("ours", "none"):
            choices[path] = "ours"
        else:
            errors[i] = "Choose ours, theirs or type a value: both sides changed this field."
    return choices, errors


class AlertRouteForm(forms.Form):
    """A route added from the console is for one of the person's tenants; routes for all tenants are
    added with `alert_route_add` by whoever runs the deployment."""

    name = forms.SlugField(label="Name", max_length=64)
    kind = forms.ChoiceField(label="Kind", choices=[("webhook", "Webhook (signed JSON)"), ("email", "Email")])
    target = forms.CharField(label="Webhook URL or email address", max_length=500)
    # A slug, not a choice: a tenant outside the person's is refused (and audited) by the view, not
    # silently reported as an invalid choice.
    tenant = forms.CharField(label="Tenant", max_length=64, widget=forms.Select)
    min_severity = forms.ChoiceField(label="Minimum severity", initial="warning")
    escalation = forms.BooleanField(
        label="Escalation route (receives only page alerts nobody acknowledged in time)", required=False
    )

    def __init__(self, *args: Any, tenants: list[str], **kwargs: Any) -> None:
        from writeback.models import Severity

        super().__init__(*args, **kwargs)
        self.fields["tenant"].widget.choices = [(slug, slug) for slug in tenants]
        self.fields["min_severity"].choices = Severity.choices


class PractitionerMapForm(forms.Form):
    """Map a person to the EHR's Practitioner at this tenant, or remove the mapping (blank reference)."""

    username = forms.CharField(label="Username", max_length=150)
    practitioner = forms.CharField(
        label="Practitioner reference",
        max_length=200,
        required=False,
        help_text="Practitioner/ID at the EHR. Leave empty to remove the mapping.",
    )
    reason = forms.CharField(label="Reason", max_length=2000, required=False)


class AuthorPolicyForm(forms.Form):
    unmapped_author = forms.ChoiceField(
        label="Initiators without a Practitioner",
        choices=[
            ("refuse", "Refuse the event (practitioner-unmapped)"),
            ("organization", "Attribute to the tenant's Organization"),
        ],
    )
    organization_ref = forms.CharField(
        label="Organization reference", max_length=200, required=False, help_text="Organization/ID at the EHR"
    )
    write_provenance = forms.BooleanField(label="Write one Provenance per event", required=False)
    reason = forms.CharField(label="Reason", max_length=2000, required=False)
