import pytest

from tests.console.conftest import client_for, committed, conflicted, failed

pytestmark = pytest.mark.django_db


def test_every_page_renders_for_an_admin(make, admin_user, clinician2, engineer, auditor):
    note = committed(make("note.signed"))
    bad = failed(make("problem.confirmed"))
    med = make("medication.reconciled")
    patient = make("demographics.updated")
    patient, conflict = conflicted(
        patient,
        theirs={
            "resourceType": "Patient",
            "id": "pat-1001",
            "telecom": [{"system": "phone", "value": "+1 555 0199"}],
        },
        base={"resourceType": "Patient", "id": "pat-1001"},
    )
    for user in (admin_user, clinician2, engineer, auditor):
        c = client_for(user)
        for url in [
            "/",
            "/writes/",
            f"/writes/{note.uid}/",
            f"/writes/{bad.uid}/",
            f"/writes/{med.uid}/",
            f"/writes/{patient.uid}/",
            "/approvals/",
            "/conflicts/",
            f"/conflicts/{conflict.uid}/",
            "/tasks/",
            "/alerts/",
            "/tenants/",
            "/tenants/generic-main/",
            "/shadow/",
        ]:
            r = c.get(url)
            assert r.status_code == 200, (user, url, r.status_code, r.content[:2000])
    r = client_for(auditor).get("/audit/")
    assert r.status_code == 200
