"""The operator's time zone in a real browser: detected from the browser on the first visit, then changed
with the keyboard (arrow keys move through the zones; only the Save button submits)."""

import re

import pytest

from console.models import OperatorPreference
from tests.browser.worker import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_zone_is_detected_once_then_changed_with_the_keyboard(tenant, clinician, page_for):
    page = page_for(clinician, timezone_id="America/Chicago")
    page.goto("/")
    assert page.inner_text(".tz-name") == "UTC"  # nothing stored yet: the default, while the browser is asked
    pref = wait_for(
        lambda: OperatorPreference.objects.filter(user=clinician).first(), timeout=15, what="detection"
    )
    assert (pref.time_zone, pref.detected) == ("America/Chicago", True)
    page.reload()
    assert page.inner_text(".tz-name") == "America/Chicago"
    assert page.locator("[data-tz-detect]").count() == 0

    page.get_by_role("link", name=re.compile("Times in")).click()
    page.wait_for_url(re.compile(r"/preferences/timezone\?next="))
    select = page.get_by_role("combobox", name="Time zone (required)")
    assert select.input_value() == "America/Chicago"
    select.focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    chosen = select.input_value()
    assert chosen != "America/Chicago"
    page.wait_for_timeout(400)  # had a change submitted the form, the page would be gone by now
    assert "/preferences/timezone" in page.url
    pref.refresh_from_db()
    assert pref.time_zone == "America/Chicago"

    page.keyboard.press("Tab")  # to the Save button
    page.keyboard.press("Enter")
    page.locator(".flash-success").wait_for()
    assert page.url.endswith("/")  # back where the person came from
    pref.refresh_from_db()
    assert (pref.time_zone, pref.detected) == (chosen, False)
    assert page.inner_text(".tz-name") == chosen
