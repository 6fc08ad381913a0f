"""The Content Security Policy on every console page, and no inline script, event handler or style
anywhere in what the console serves (or in any template), so the policy can forbid them."""

import re
import uuid
from pathlib import Path

import pytest
from django.urls import URLPattern

from console.urls import urlpatterns
from tests.console.conftest import client_for, committed, conflicted, failed
from writeback.models import BulkOperation, ManualTask
from writeback.services.killswitches import kill_switch_engage

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}
PAGES = {
    "console-overview",
    "console-writes",
    "console-write",
    "console-write-plan",
    "console-write-chart",
    "console-write-rollback",
    "console-write-replay-form",
    "console-approvals",
    "console-conflicts",
    "console-conflict",
    "console-tasks",
    "console-alerts",
    "console-reconciliation",
    "console-alert",
    "console-alert-routes",
    "console-tenants",
    "console-tenant",
    "console-audit",
    "console-shadow",
    "console-bulk",
}
TAG = re.compile(r"<[a-zA-Z][^>]*>", re.S)
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>", re.I | re.S)
HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)
STYLE_ATTR = re.compile(r"\sstyle\s*=", re.I)


def policy_of(response) -> dict[str, str]:
    header = response.headers.get("Content-Security-Policy", "")
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


def inline_problems(html: str) -> list[str]:
    problems = [f"inline script: {m.group(0)[:80]}" for m in INLINE_SCRIPT.finditer(html)]
    for tag in TAG.findall(html):
        if HANDLER.search(tag):
            problems.append(f"event handler: {tag[:120]}")
        if STYLE_ATTR.search(tag):
            problems.append(f"style attribute: {tag[:120]}")
        if "javascript:" in tag.lower():
            problems.append(f"javascript: URL: {tag[:120]}")
    return problems


@pytest.fixture
def objects(make, tenant, engineer, admin_user):
    note = committed(make("note.signed"))
    broken = failed(make("problem.confirmed"))
    _, conflict = conflicted(make("demographics.updated"), {"resourceType": "Patient", "gender": "other"})
    task = ManualTask.objects.create(
        tenant=tenant, write=note, role="admin", title="Mark it in the EHR", instructions="Open the chart."
    )
    switch = kill_switch_engage(user=engineer, scope="tenant", behaviour="hold", reason="x", tenant=tenant)
    client_for(admin_user).post("/bulk/start", {"uid": [str(broken.uid)], "reason": "again", "rate": "1"})
    return {
        "writes": note.uid,
        "bulk": BulkOperation.objects.get().uid,
        "conflicts": conflict.uid,
        "tasks": task.uid,
        "alerts": broken.alerts.get().uid,
        "kill-switches": switch.uid,
        "capability-changes": uuid.uuid4(),  # POST-only: never looked up on a GET
        "policy-changes": uuid.uuid4(),  # POST-only, as above
        "reconciliation": uuid.uuid4(),  # POST-only, as above
        "tenants": tenant.slug,
        "alert-routes": "no-such-route",  # POST-only: never looked up on a GET
    }


def console_urls(objects) -> dict[str, str]:
    urls = {}
    for pattern in urlpatterns:
        assert isinstance(pattern, URLPattern)
        route = str(pattern.pattern)
        value = objects[route.split("/", 1)[0]] if "<" in route else None
        urls[pattern.name] = "/" + re.sub(r"<[^>]+>", str(value), route)
    return urls


def test_every_console_page_carries_the_policy_and_no_inline_code(objects, admin_user):
    c = client_for(admin_user)
    urls = console_urls(objects)
    assert len(urls) == len(urlpatterns)  # every console route is fetched
    statuses = {}
    for name, url in urls.items():
        for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
            r = c.get(url, **headers)
            statuses[name] = r.status_code
            assert r.status_code < 500, (name, url)
            policy = policy_of(r)
            for directive, value in POLICY.items():
                assert policy.get(directive) == value, (name, directive, policy)
            if r.get("Content-Type", "").startswith("text/html"):
                html = r.content.decode()
                assert inline_problems(html) == [], (name, url)
                assert "{#" not in html and "{%" not in html, (name, url)  # no template text leaks
    # The real pages answered (POST-only actions answer 405), not a wall of errors.
    pages = {n for n, s in statuses.items() if s == 200}
    assert pages >= PAGES, statuses


def test_sign_in_and_error_pages_carry_the_policy(client):
    for url in ("/login/", f"/writes/{uuid.uuid4()}/", "/no-such-page/"):
        r = client.get(url, follow=True)
        assert policy_of(r).get("script-src") == "'self'", url
        assert inline_problems(r.content.decode()) == [], url


def test_no_template_has_inline_script_handlers_or_styles():
    problems = {
        str(path.relative_to(TEMPLATES)): inline_problems(path.read_text())
        for path in TEMPLATES.rglob("*.html")
    }
    assert {k: v for k, v in problems.items() if v} == {}


def test_the_checks_would_catch_inline_code():
    assert inline_problems('<script>alert(1)</script><script src="/static/a.js"></script>') != []
    assert inline_problems('<button onclick="x()">') != []
    assert inline_problems('<div style="width: 5%">') != []
    assert inline_problems('<a href="javascript:x()">') != []
    assert inline_problems('<script src="/static/js/console.js" defer></script><p>on=1</p>') == []
