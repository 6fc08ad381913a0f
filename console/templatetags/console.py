"""Badges, times in the operator's zone, JSON and numbers, as the console shows them."""

import json
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from writeback.models import Risk, Severity
from writeback.states import WriteState

register = template.Library()

# A shape per family of states, so a badge never relies on colour alone (its text says it too).
STATE_GLYPH = {
    "draft": "○",
    "validated": "○",
    "awaiting_approval": "◆",
    "pending": "◷",
    "outcome_unknown": "?",
    "committed": "✓",
    "failed_retryable": "↻",
    "failed_terminal": "✕",
    "conflict": "⇄",
    "rejected": "⊘",
    "superseded": "↷",
    "compensated": "↶",
    "resolved": "✓",
    "shadowed": "◐",
    "previewed": "◌",
    "held_authorization": "⊗",
}
SEVERITY_GLYPH = {"page": "▲", "critical": "■", "warning": "●", "info": "○"}


# Short badge texts; the full label is the badge's title.
STATE_SHORT = {
    "failed_retryable": "Retrying",
    "failed_terminal": "Failed",
    "shadowed": "Shadowed",
    "previewed": "Dry run",
    "resolved": "Resolved by hand",
    "held_authorization": "Held: authority",
}


@register.simple_tag
def state_badge(state: str) -> str:
    try:
        label = WriteState(state).label
    except ValueError:
        label = state
    return format_html(
        '<span class="badge state state-{}" title="{}">'
        '<span class="glyph" aria-hidden="true">{}</span>{}</span>',
        state,
        label,
        STATE_GLYPH.get(state, "•"),
        STATE_SHORT.get(state, label),
    )


@register.simple_tag
def risk_badge(risk: str, short: bool = False) -> str:
    try:
        label = Risk(risk).label
    except ValueError:
        label = risk
    if short:
        return format_html('<span class="badge risk risk-{}" title="{} risk">{}</span>', risk, label, label)
    return format_html('<span class="badge risk risk-{}">{} risk</span>', risk, label)


@register.simple_tag
def severity_badge(severity: str) -> str:
    try:
        label = Severity(severity).label
    except ValueError:
        label = severity
    return format_html(
        '<span class="badge sev sev-{}"><span class="glyph" aria-hidden="true">{}</span>{}</span>',
        severity,
        SEVERITY_GLYPH.get(severity, "•"),
        label,
    )


def _time_html(value: datetime | None, fmt: str, tz_class: str) -> str:
    if not value:
        return "—"
    from django.utils.dateformat import format as date_format

    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return format_html(
        '<time datetime="{}">{} <span class="{}">{}</span></time>',
        value.isoformat(),
        date_format(local, fmt),
        tz_class,
        local.strftime("%Z") if timezone.is_aware(value) else "",
    )


@register.filter
def when(value: datetime | None, fmt: str = "Y-m-d H:i:s") -> str:
    """A timestamp in the operator's time zone, machine-readable too."""
    return _time_html(value, fmt, "tz")


@register.filter
def iso_when(value: str | None) -> str:
    """An ISO 8601 string (as kept in JSON settings) shown like any other timestamp."""
    from django.utils.dateparse import parse_datetime

    parsed = parse_datetime(value) if isinstance(value, str) else None
    return when(parsed) if parsed else (value or "—")


@register.filter
def when_short(value: datetime | None) -> str:
    """Month, day and time in the operator's zone (lists, where the header names the zone)."""
    return _time_html(value, "M d, H:i", "tz visually-hidden")


@register.filter
def day(value: datetime | None) -> str:
    if not value:
        return "—"
    return (
        timezone.localtime(value).strftime("%b %d") if timezone.is_aware(value) else value.strftime("%b %d")
    )


AUDIT_KEYS = (
    "mode",
    "kind",
    "scope",
    "behaviour",
    "resource_type",
    "operation",
    "old",
    "new",
    "allowed",
    "decision",
    "rule",
    "action",
    "format",
    "severity",
    "code",
    "ok",
    "checked",
    "count",
    "outcome",
    "queue_released",
    "differences",
    "warning",
)


@register.filter
def audit_detail(entry: Any) -> str:
    """One line saying what an audit entry records."""
    data = getattr(entry, "data", None) or {}
    if not isinstance(data, dict):
        return ""
    parts = []
    if "from" in data and "to" in data:
        parts.append(f"{data['from']} → {data['to']}")
    for key in AUDIT_KEYS:
        if key in data and data[key] not in (None, "", [], {}):
            parts.append(f"{key.replace('_', ' ')} {data[key]}")
    reason = data.get("reason")
    if isinstance(reason, str) and reason:
        parts.append(f"“{reason}”")
    text = "; ".join(parts)
    return text if len(text) <= 160 else text[:157] + "…"


@register.filter
def ago(value: datetime | None) -> str:
    if not value:
        return "—"
    seconds = (timezone.now() - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            return f"in {amount}" if future else f"{amount} ago"
    return "just now"


@register.filter
def fact(value: Any) -> str:
    if isinstance(value, datetime):
        return when(value)
    return "" if value is None else str(value)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@register.filter
def compact_json(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 240 else text[:237] + "…"


@register.filter
def json_input(value: Any) -> str:
    """A value as the JSON a person would type back into an edit box."""
    return json.dumps(value, ensure_ascii=False, default=str)


@register.filter
def pct(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f} %"


@register.filter
def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


@register.filter
def short(value: Any, length: int = 8) -> str:
    text = str(value or "")
    return text[:length]


@register.filter
def url_breaks(value: Any) -> str:
    """A URL that may wrap after its slashes (never inside a host or a path segment)."""
    from django.utils.html import escape

    return mark_safe(escape(str(value or "")).replace("/", "/<wbr>"))  # noqa: S308 (escaped above)


@register.filter
def get(mapping: dict | None, key: Any) -> Any:
    return (mapping or {}).get(key, 0) if isinstance(mapping, dict) else 0


@register.filter
def state_label(state: str) -> str:
    try:
        return WriteState(state).label
    except ValueError:
        return state


@register.filter
def percent_of(part: float, whole: float) -> float:
    return round(100 * part / whole, 2) if whole else 0


@register.filter
def width_step(percent: float) -> int:
    """A percentage rounded to the nearest 5, for the `w-<n>` width classes: the Content Security Policy
    allows no inline style attributes."""
    return min(100, max(0, int(5 * round(float(percent or 0) / 5))))


@register.simple_tag(takes_context=True)
def nav_current(context, *names: str) -> str:
    """aria-current for the navigation link of the page being shown."""
    match = getattr(context.get("request"), "resolver_match", None)
    current = getattr(match, "url_name", "") or ""
    if any(current == n or (n.endswith("*") and current.startswith(n[:-1])) for n in names):
        return mark_safe('aria-current="page"')  # noqa: S308 - a constant
    return ""


# Line icons drawn on a 24-unit grid (stroke only), so they inherit the text colour.
ICONS = {
    "overview": "M4 4h7v7H4zM13 4h7v4h-7zM13 10h7v10h-7zM4 13h7v7H4z",
    "writes": "M8 6h12M8 12h12M8 18h12M4 6h.01M4 12h.01M4 18h.01",
    "approvals": "M12 3l7 3v5c0 4.5-3 8-7 10-4-2-7-5.5-7-10V6zM9 12l2 2 4-4",
    "conflicts": "M7 4v13M7 17l-3-3M7 17l3-3M17 20V7M17 7l-3 3M17 7l3 3",
    "tasks": "M9 4h6v3H9zM7 5H5v16h14V5h-2M9 13l2 2 4-4",
    "alerts": "M12 4a6 6 0 0 0-6 6v4l-2 3h16l-2-3v-4a6 6 0 0 0-6-6zM10 20a2 2 0 0 0 4 0",
    "tenants": "M4 5h16v5H4zM4 14h16v5H4zM8 7.5h.01M8 16.5h.01",
    "shadow": "M12 3a9 9 0 1 0 0 18zM12 3a9 9 0 0 1 0 18",
    "audit": (
        "M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1"
    ),
    "pause": "M9 5v14M15 5v14",
    "info": "M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM12 11v6M12 7.5h.01",
    "warn": "M12 3L2 20h20zM12 10v4M12 17h.01",
    "check": "M5 12l5 5L20 7",
    "stop": "M6 6h12v12H6z",
}


@register.simple_tag
def icon(name: str, size: int = 18) -> str:
    return format_html(
        '<svg class="icon" width="{}" height="{}" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
        'stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" '
        'aria-hidden="true" focusable="false">'
        '<path d="{}"/></svg>',
        size,
        size,
        ICONS.get(name, ""),
    )


def _coding_text(value: dict) -> str:
    if value.get("text"):
        return str(value["text"])
    for c in value.get("coding") or []:
        if isinstance(c, dict) and (c.get("display") or c.get("code")):
            return str(c.get("display") or c.get("code"))
    return ""


def _human_one(value: Any) -> str:
    if not isinstance(value, dict):
        return "" if value is None else str(value)
    if "coding" in value or ("text" in value and len(value) <= 2):
        return _coding_text(value)
    if "reference" in value:
        return str(value.get("display") or value["reference"])
    if "value" in value and "system" in value and isinstance(value.get("value"), str):  # ContactPoint
        use = f" ({value['use']})" if value.get("use") else ""
        return f"{value['system']} {value['value']}{use}"
    if "value" in value and ("unit" in value or "code" in value):  # Quantity
        return f"{value['value']} {value.get('unit') or value.get('code')}"
    if "line" in value or "city" in value:  # Address
        parts = [
            ", ".join(value.get("line") or []),
            value.get("city"),
            value.get("state"),
            value.get("postalCode"),
        ]
        use = f" ({value['use']})" if value.get("use") else ""
        return ", ".join(p for p in parts if p) + use
    if "family" in value or "given" in value:  # HumanName
        return " ".join([*(value.get("given") or []), value.get("family", "")]).strip()
    if "display" in value or "code" in value:  # Coding
        return str(value.get("display") or value.get("code"))
    if "text" in value:
        return str(value["text"])
    return ""


@register.filter
def human(value: Any) -> str:
    """A FHIR element as a person reads it ("phone +1 555 0100 (mobile)"); compact JSON otherwise."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, list):
        parts = [_human_one(v) for v in value]
        if all(parts):
            return "; ".join(parts)
        return compact_json(value)
    if isinstance(value, dict):
        return _human_one(value) or compact_json(value)
    return str(value)
