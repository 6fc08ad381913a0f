"""athena adapter: v1 form-encoded writes, reference lookups, quirks in the classifier, demographics by
read-compare-write (recorded athena-style responses, respx)."""

import json
from urllib.parse import parse_qs

import pytest
import respx

from adapters.athena.adapter import AthenaAdapter
from adapters.base import Guarantee, Outcome
from tests.adapters.intended import write_request
from tests.adapters.support import BASES, recorded, target

FHIR = BASES["athena"]
V1 = "http://athena.example.org/v1/195900"
SETTINGS = {"practice_id": "195900", "department_id": "12", "document_type_id": "340"}


@pytest.fixture
def adapter():
    a = AthenaAdapter(target("athena", settings=SETTINGS))
    yield a
    a.close()


def _form(route, n=-1):
    return {k: v[0] for k, v in parse_qs(route.calls[n].request.content.decode()).items()}


@respx.mock
def test_vitals_are_form_encoded_with_the_marker_and_utc_reading_time(adapter):
    req = write_request("vitals.recorded", 0)  # blood pressure: two athena elements in one group
    route = respx.post(f"{V1}/chart/pat-1001/vitals").mock(return_value=recorded("athena", "vitals_200"))
    result = adapter.write(req)
    form = _form(route)
    assert route.calls[0].request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert (form["departmentid"], form["source"], form["returnvitalids"]) == ("12", "DEVICEGENERATED", "true")
    (group,) = json.loads(form["vitals"])
    assert [r["clinicalelementid"] for r in group] == [
        "VITALS.BLOODPRESSURE.SYSTOLIC",
        "VITALS.BLOODPRESSURE.DIASTOLIC",
    ]
    assert {r["readingtaken"] for r in group} == {"11/20/2026 19:00"}  # 14:00 -05:00
    assert all(f"[wb:{req.write_uid}]" in r["note"] for r in group)
    assert (result.outcome, result.resource_id) == (Outcome.COMMITTED, "a-195900.Vitals-1001")
    assert result.sent["effectiveDateTime"] == "2026-11-20T19:00:00Z" and result.stored is None


@respx.mock
def test_success_false_inside_a_200_is_terminal(adapter):
    respx.post(f"{V1}/chart/pat-1001/problems").mock(
        return_value=recorded("athena", "problem_200_success_false")
    )
    result = adapter.write(write_request("problem.confirmed"))
    assert result.outcome is Outcome.TERMINAL and "not active in this department" in result.message


@respx.mock
def test_problem_form(adapter):
    route = respx.post(f"{V1}/chart/pat-1001/problems").mock(
        return_value=recorded("athena", "vitals_200", body={"success": True, "problemid": "88"})
    )
    result = adapter.write(write_request("problem.confirmed"))
    form = _form(route)
    assert (form["snomedcode"], form["startdate"], form["status"]) == ("38341003", "03/01/2024", "CHRONIC")
    assert form["note"].startswith("confirmed at visit [wb:")
    assert result.resource_id == "a-195900.Problem-88"


@respx.mock
def test_throttling_is_retryable_with_retry_after(adapter):
    respx.post(f"{V1}/chart/pat-1001/vitals").mock(return_value=recorded("athena", "throttled_403"))
    result = adapter.write(write_request("vitals.recorded", 1))
    assert (result.outcome, result.retry_after) == (Outcome.RETRYABLE, 30)


@respx.mock
def test_a_gateway_error_after_a_post_may_have_landed(adapter):
    respx.post(f"{V1}/chart/pat-1001/vitals").mock(return_value=recorded("athena", "gateway_502"))
    assert adapter.write(write_request("vitals.recorded", 1)).outcome is Outcome.AMBIGUOUS


@respx.mock
def test_medications_are_looked_up_first(adapter):
    lookup = respx.get(f"{V1}/reference/medications").mock(
        return_value=recorded("athena", "medication_lookup_200")
    )
    post = respx.post(f"{V1}/chart/pat-1001/medications").mock(
        return_value=recorded("athena", "medication_200")
    )
    result = adapter.write(write_request("medication.reconciled"))
    assert lookup.calls[0].request.url.params["searchvalue"] == "197361"
    form = _form(post)
    assert (form["medicationid"], form["startdate"], form["unstructuredsig"]) == (
        "240010",
        "11/20/2026",
        "5 mg by mouth once daily",
    )
    assert result.resource_id == "a-195900.MedicationEntry-7788"


@respx.mock
def test_an_unknown_medication_is_refused_without_writing(adapter):
    respx.get(f"{V1}/reference/medications").mock(return_value=recorded("athena", "medication_lookup_empty"))
    post = respx.post(f"{V1}/chart/pat-1001/medications")
    result = adapter.write(write_request("medication.reconciled"))
    assert result.outcome is Outcome.TERMINAL and "RxNorm 197361" in result.message and not post.called


@respx.mock
def test_allergy_put_then_found_by_marker(adapter):
    req = write_request("allergy.recorded")
    mine = recorded("athena", "allergy_search_penicillin").json()
    mine["entry"][0]["resource"]["note"] = [{"text": f"[wb:{req.write_uid}]"}]
    search = respx.get(f"{FHIR}/AllergyIntolerance").mock(
        side_effect=[
            recorded("athena", "allergy_search_empty"),
            recorded("athena", "allergy_search_empty", body=mine),
        ]
    )
    respx.get(f"{V1}/reference/allergies").mock(return_value=recorded("athena", "allergen_lookup_200"))
    put = respx.put(f"{V1}/chart/pat-1001/allergies").mock(
        return_value=recorded("athena", "allergies_put_200")
    )
    result = adapter.write(req)
    (entry,) = json.loads(_form(put)["allergies"])
    assert entry["allergenid"] == "10495" and entry["criticality"] == "high"
    assert entry["reactions"] == [
        {"reactionname": "Hives", "snomedcode": "247472004", "severity": "moderate"}
    ]
    assert search.calls[0].request.url.params["ah-practice"] == "Organization/a-1.Practice-195900"
    assert (result.outcome, result.resource_id) == (Outcome.COMMITTED, "a-195900.Allergy-3301")


@respx.mock
def test_an_allergen_already_on_the_chart_is_not_merged_into(adapter):
    respx.get(f"{FHIR}/AllergyIntolerance").mock(return_value=recorded("athena", "allergy_search_penicillin"))
    put = respx.put(f"{V1}/chart/pat-1001/allergies")
    result = adapter.write(write_request("allergy.recorded"))
    assert result.outcome is Outcome.TERMINAL and "would merge" in result.message and not put.called


@respx.mock
def test_demographics_read_compare_write(adapter):
    req = write_request("demographics.updated", base_version="1")
    read = respx.get(f"{FHIR}/Patient/pat-1001").mock(return_value=recorded("athena", "patient_read_200"))
    put = respx.put(f"{V1}/patients/pat-1001").mock(return_value=recorded("athena", "demographics_put_200"))
    result = adapter.write(req)
    form = _form(put)
    assert form == {
        "mobilephone": "+15550100",
        "address1": "1 Main St",
        "city": "Springfield",
        "state": "IL",
        "zip": "62701",
    }
    assert read.call_count == 2  # before (compare) and after (new version)
    assert result.outcome is Outcome.COMMITTED and result.guarantee is Guarantee.READ_COMPARE_WRITE
    # athena keeps the home phone: the prediction says so.
    assert [t["use"] for t in result.sent["telecom"]] == ["home", "mobile"]


@respx.mock
def test_demographics_based_on_an_old_version_are_a_conflict(adapter):
    respx.get(f"{FHIR}/Patient/pat-1001").mock(return_value=recorded("athena", "patient_read_200"))
    put = respx.put(f"{V1}/patients/pat-1001")
    result = adapter.write(write_request("demographics.updated", base_version="0"))
    assert result.outcome is Outcome.CONFLICT and result.current_version == "1" and not put.called


def test_what_v1_cannot_carry_is_refused():
    adapter = AthenaAdapter(target("athena", settings=SETTINGS))
    email = write_request("demographics.updated")
    email.resource["telecom"] = [{"system": "email", "value": "a@example.org"}]
    assert "mobile and home phone" in adapter.preflight(email)
    stopped = write_request("medication.reconciled")
    stopped.resource["status"] = "stopped"
    assert "active medications only" in adapter.preflight(stopped)
    assert "no API to change a referral Task" in adapter.preflight(write_request("referral.status_changed"))
    unconfigured = AthenaAdapter(target("athena"))
    assert "practice_id and department_id" in unconfigured.preflight(write_request("vitals.recorded"))


def test_compensations(adapter):
    chart = adapter.compensation(
        write_request("problem.confirmed"),
        kind="rollback",
        resource_id="a-195900.Problem-9",
        version="",
        data=None,
    )
    assert (
        chart.requests == []
        and "athenaOne" in chart.manual.instructions
        and "Problems" in chart.manual.instructions
    )
    demographics = write_request("demographics.updated", base_version="1")
    (restore,) = adapter.compensation(
        demographics, kind="rollback", resource_id="pat-1001", version="2", data=None
    ).requests
    assert (
        restore.operation == "compensate"
        and restore.resource["telecom"] == demographics.context["pre_image"]["telecom"]
    )
    assert restore.context["expected"]["telecom"] == demographics.resource["telecom"]


def test_plan_shows_lookup_then_write(adapter):
    lookup, post = adapter.plan(write_request("medication.reconciled"))
    assert (lookup.method, post.method) == ("GET", "POST")
    assert post.body["medicationid"] == "<medicationid from the lookup>"
