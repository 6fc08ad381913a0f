"""The console under its Content Security Policy in a real browser: htmx, console.js and the styles all
load, and nothing the pages do is refused by the policy."""

import pytest

from tests.writeback.sync.conftest import post
from writeback.models import AuditEntry

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_console_works_with_no_policy_violation(live, api, sim, clinician2, anonymous_page):
    med = post(api, "medication.reconciled", key="browser-csp")[0]
    page = anonymous_page
    violations: list[str] = []
    page.on(
        "console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None
    )
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation',"
        " e => console.error('Content Security Policy violation: ' + e.violatedDirective));"
    )
    page.goto("/login/")
    page.fill("#id_username", "bob.clinician")
    page.fill("#id_password", "pw-for-tests-only")
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("#dashboard")
    assert page.evaluate("typeof window.htmx") == "object"  # htmx loaded from static/
    assert page.evaluate("document.documentElement.classList.contains('js')")  # console.js ran
    page.goto(f"/writes/{med.uid}/")
    page.get_by_role("link", name="Show the plan").click()  # htmx GET
    page.locator("#plan-panel .prediction").wait_for()
    page.goto("/approvals/")
    card = page.locator(f"#approval-{med.uid}")
    card.get_by_role("button", name="Compare with the current chart").click()  # htmx POST with CSRF
    card.locator(".chart-compare").wait_for()
    page.goto("/")
    page.locator(".meter-ok, .kpis").first.wait_for()
    assert violations == []
    assert AuditEntry.objects.filter(action="ehr.read", write_uid=str(med.uid)).count() == 1
