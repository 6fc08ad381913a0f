"""Screenshots of the main console pages, from a realistic state, for docs/console.md.

Run with `make screenshots` (or name this file on the pytest command line): the PNGs land in
docs/screenshots/. As part of a whole test run the pages are still built and photographed, into a
temporary folder, so the committed images change only when someone means to refresh them.
"""

from pathlib import Path

import pytest

from tests.browser import scene
from writeback.models import Conflict, Tenant, Write
from writeback.states import WriteState

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def out(request, tmp_path) -> Path:
    named = any(Path(arg.split("::")[0]).name == Path(__file__).name for arg in request.config.args)
    return DOCS if named else tmp_path


@pytest.fixture
def built(settings):
    state = scene.build(settings)
    yield state
    state.stop()


def shoot(page, out: Path, name: str, *, full_page: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out / f"{name}.png"), full_page=full_page)


def test_screenshots(built, out, page_for, anonymous_page):
    anonymous_page.goto("/login/")
    shoot(anonymous_page, out, "login")

    admin = scene.user("ada.admin")
    page = page_for(admin, width=1440, height=1000)
    page.goto("/")
    page.wait_for_selector("#dashboard")
    shoot(page, out, "overview", full_page=True)

    page.goto("/writes/")
    page.wait_for_selector("#write-table")
    shoot(page, out, "write-list")

    conflict = Conflict.objects.select_related("write").filter(resolved_at__isnull=True).first()
    parked = Write.objects.filter(resource_type="Task", state=WriteState.PENDING).first()
    committed = (
        Write.objects.filter(state=WriteState.COMPENSATED).first()
        or Write.objects.filter(state=WriteState.COMMITTED).first()
    )
    page.goto(f"/writes/{committed.uid}/")
    page.wait_for_selector(".timeline")
    shoot(page, out, "write-detail", full_page=True)
    if conflict is not None:
        page.goto(f"/writes/{conflict.write.uid}/")
        page.click("text=Show the plan and read the EHR")
        page.wait_for_selector(".prediction")
        shoot(page, out, "write-detail-conflict", full_page=True)
    if parked is not None:
        page.goto(f"/writes/{parked.uid}/")
        page.wait_for_selector(".banner-warn")
        shoot(page, out, "write-detail-parked")

    clinician = scene.user("bob.clinician")
    cpage = page_for(clinician, width=1440, height=1000)
    cpage.goto("/approvals/")
    cpage.wait_for_selector(".approval-card")
    for card in cpage.locator(".approval-card").all():
        card.get_by_role("button", name="Compare with the current chart").click()
        card.locator(".chart-compare").wait_for()
    shoot(cpage, out, "approval-queue", full_page=True)

    if conflict is not None:
        cpage.goto(f"/conflicts/{conflict.uid}/")
        # Where both sides changed a field, keep the clinician's newer edit in the EHR.
        for radio in cpage.locator(".diff-both input[value=theirs]").all():
            radio.check()
        cpage.click("text=Preview the resulting resource")
        cpage.wait_for_selector("#preview pre")
        shoot(cpage, out, "conflict-reconciliation", full_page=True)

    engineer = scene.user("ed.engineer")
    epage = page_for(engineer, width=1440, height=1000)
    epage.goto("/tenants/")
    shoot(epage, out, "tenants")
    epage.goto(f"/tenants/{Tenant.objects.get(slug='generic-main').slug}/")
    shoot(epage, out, "tenant-capabilities", full_page=True)

    page.goto("/alerts/?status=all")
    shoot(page, out, "alerts", full_page=True)

    auditor = scene.user("al.auditor")
    apage = page_for(auditor, width=1440, height=1000)
    apage.goto("/audit/")
    shoot(apage, out, "audit-log")

    page.goto("/shadow/")
    shoot(page, out, "shadow-divergence", full_page=True)
    assert (out / "overview.png").exists()
