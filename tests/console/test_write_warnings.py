"""Read-back warnings (the EHR stored a write differently from what was sent) are shown: in full on the
write page, as a marker on the write's row in the list."""

import re

import pytest

from tests.console.conftest import HTMX, RECORDER, client_for, exchange
from writeback.models import Write
from writeback.services.record import Readback

pytestmark = pytest.mark.django_db


def committed_with_readback(write: Write, diff: list[dict], warning: str = "") -> Write:
    RECORDER.committed(
        write,
        exchanges=[exchange()],
        resource_id="doc-9",
        version="1",
        guarantee="ledger",
        counted=True,
        readback=Readback([], diff, warning),
    )
    return Write.objects.select_related("tenant", "event").get(pk=write.pk)


@pytest.fixture
def changed(make):
    diff = [
        {"path": "description", "sent": "Progress note", "stored": "Progress Note", "kind": "changed"},
        {"path": "category", "sent": [{"text": "note"}], "stored": None, "kind": "dropped"},
    ]
    return committed_with_readback(make("note.signed"), diff, warning="the read-back took 2 tries")


def test_the_write_page_shows_each_warning(changed, clinician):
    assert changed.warnings == [
        "the EHR stored 2 field(s) differently from what we sent",
        "the read-back took 2 tries",
    ]
    body = client_for(clinician).get(f"/writes/{changed.uid}/").content.decode()
    banner = re.search(r'<div class="banner banner-warn write-warnings".*?</div>\s*</div>', body, re.S)
    assert banner, "no warning banner"
    text = banner.group(0)
    assert '<strong id="warn-h">2 warnings on this write</strong>' in text
    assert "<li>The EHR stored 2 field(s) differently from what we sent</li>" in text
    assert "<li>The read-back took 2 tries</li>" in text
    assert '<a href="#diff-h">See what the EHR stored, field by field</a>' in text
    assert "description" in body and "Progress Note" in body  # the field-level diff below


def test_a_write_without_warnings_has_no_banner(make, clinician):
    clean = committed_with_readback(make("note.signed"), [])
    assert clean.warnings == []
    body = client_for(clinician).get(f"/writes/{clean.uid}/").content.decode()
    assert "write-warnings" not in body and "on this write</strong>" not in body
    assert "Read back after commit: the EHR stored exactly what we sent." in body


def row_of(body: str, write: Write) -> str:
    match = re.search(
        rf'<tr class="dense">(?:(?!</tr>).)*?/writes/{write.uid}/(?:(?!</tr>).)*</tr>', body, re.S
    )
    assert match, f"no row for {write.uid}"
    return match.group(0)


def test_the_list_marks_the_rows_with_warnings(changed, make, clinician):
    clean = committed_with_readback(make("note.signed", title="Second note"), [])
    body = client_for(clinician).get("/writes/", **HTMX).content.decode()
    marked = row_of(body, changed)
    assert 'class="badge tag-warn warn-mark"' in marked
    assert '2<span class="visually-hidden"> warnings</span>' in marked
    assert (
        'title="the EHR stored 2 field(s) differently from what we sent; the read-back took 2 tries"'
        in marked
    )
    assert "warn-mark" not in row_of(body, clean)
