"""One vocabulary of audit actions: the AuditAction enum. Nothing emits an action it lacks, and the
console's filter and the timeline's titles come from it."""

import ast
from pathlib import Path

import pytest

from tests.writeback.helpers import EVENT_TYPES, consent_for, event
from writeback.models import AuditAction, AuditEntry, audit_title
from writeback.services import audit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("writeback", "console", "adapters") for p in (ROOT / d).rglob("*.py")]


def _audit_calls():
    """Every call of audit.record / audit.draft / AuditDraft in the product's code, with its action
    argument (positional or `action=`)."""
    for path in SOURCES:
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = (
                func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            )
            if not ((owner == "audit" and name in ("record", "draft")) or name == "AuditDraft"):
                continue
            arg = (
                node.args[0]
                if node.args
                else next((k.value for k in node.keywords if k.arg == "action"), None)
            )
            yield path.relative_to(ROOT), node.lineno, arg


def test_no_audit_call_passes_a_free_string():
    strings = [
        f"{path}:{line}"
        for path, line, arg in _audit_calls()
        if isinstance(arg, ast.Constant | ast.JoinedStr)
    ]
    assert strings == [], "audit actions are AuditAction members, never strings"


def test_an_action_the_enum_lacks_is_refused():
    with pytest.raises(ValueError):
        audit.draft("write.teleported", actor="system")
    assert audit.draft("write.transition", actor="system").action is AuditAction.WRITE_TRANSITION


def test_every_action_a_full_scenario_emits_is_a_member(api, tenant, clinician):
    consent_for(tenant)
    for event_type in EVENT_TYPES:
        assert api.post("/api/v1/events", event(event_type), format="json").status_code == 201
    emitted = set(AuditEntry.objects.values_list("action", flat=True))
    assert emitted and emitted <= set(AuditAction.values)


@pytest.mark.django_db
def test_console_filter_offers_every_action(client, django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("audrey", password="pw-for-tests-only")
    user.groups.add(Group.objects.get(name="auditor"))
    client.force_login(user)
    page = client.get("/audit/").content.decode()
    for value in AuditAction.values:
        assert f'<option value="{value}">' in page


def test_titles_come_from_the_enum():
    assert audit_title("write.readback") == AuditAction.WRITE_READBACK.label
    assert audit_title("legacy.action") == "legacy.action"
