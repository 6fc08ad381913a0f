"""Fault injection: each fault fires (probability 1.0, seeded), only on the EHR's APIs."""

import time

import httpx
import pytest

from adapters.simulator.faults import FaultInjector, parse_fault_spec

from .conftest import WB, vital


def post_vital(sim, client, write_id="f-1", **kwargs):
    return client.post(f"{sim.fhir_base}/Observation", json=vital(write_id=write_id), **kwargs)


def test_timeout_after_commit_stores_although_the_client_timed_out(generic, client):
    generic.set_faults("timeout_after_commit=1.0,stall_seconds=1,seed=3")
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        post_vital(generic, client, timeout=httpx.Timeout(5, read=0.3))
    assert time.perf_counter() - started < 0.9
    assert generic.count_by_identifier(WB) == {"f-1": 1}
    assert generic.faults()["fired"]["timeout_after_commit"] == 1


def test_a_stall_blocks_only_its_own_connection(generic):
    generic.set_faults("timeout_after_commit=1.0,stall_seconds=1")
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as stalled, httpx.Client(timeout=2) as other:
        with pytest.raises(httpx.ReadTimeout):
            post_vital(generic, stalled)
        generic.clear_faults()
        started = time.perf_counter()
        assert other.get(f"{generic.fhir_base}/Patient/pat-1001").status_code == 200
        assert time.perf_counter() - started < 0.5


def test_drop_connection_gives_a_connection_error_and_stores_nothing(generic, client):
    generic.set_faults("drop_connection=1.0,seed=1")
    with pytest.raises(httpx.RemoteProtocolError):
        post_vital(generic, client)
    assert generic.count_by_identifier(WB) == {}
    assert generic.requests(1)[0]["fault"] == "drop_connection"


def test_error_5xx_answers_500_or_502_before_storing(generic, client):
    generic.set_faults({"error_5xx": 1.0, "seed": 7})
    statuses = {post_vital(generic, client, write_id=f"e-{i}").status_code for i in range(12)}
    assert statuses == {500, 502}
    assert generic.count_by_identifier(WB) == {}
    assert generic.faults()["fired"] == {"error_5xx": 12}


def test_rate_limit_answers_429_with_retry_after(generic, client):
    generic.set_faults("rate_limit=1.0")
    r = post_vital(generic, client)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["issue"][0]["code"] == "throttled"
    assert generic.count_by_identifier(WB) == {}


def test_maintenance_window_answers_503_then_serves_again(generic, client):
    generic.set_faults("maintenance=0..0.6")
    r = client.get(f"{generic.fhir_base}/Patient/pat-1001")
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    time.sleep(0.7)
    assert client.get(f"{generic.fhir_base}/Patient/pat-1001").status_code == 200
    assert generic.faults()["fired"]["maintenance"] == 1


def test_stale_version_makes_an_if_match_update_412(generic, client):
    url = f"{generic.fhir_base}/Patient/pat-1003"
    patient = client.get(url).json()
    generic.set_faults("stale_version=1.0,seed=2")
    r = client.put(url, json={**patient, "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert client.get(url).json()["meta"]["versionId"] == "2"  # the concurrent edit, not ours
    assert client.put(url, json=patient).status_code == 200  # no If-Match: the fault does not apply


def test_slow_ms_delays_answers(generic, client):
    generic.set_faults("slow_ms=150")
    started = time.perf_counter()
    assert client.get(f"{generic.fhir_base}/Patient/pat-1001").status_code == 200
    assert time.perf_counter() - started >= 0.15


def test_faults_never_touch_control_endpoints(generic, client):
    generic.set_faults("error_5xx=1.0,drop_connection=1.0,maintenance=0..60")
    assert client.get(f"{generic.origin}/_sim/health").status_code == 200
    assert client.get(f"{generic.origin}/_sim/resources", params={"type": "Patient"}).status_code == 200


def test_a_seed_repeats_the_same_faults():
    runs = []
    for _ in range(2):
        injector = FaultInjector()
        injector.configure("error_5xx=0.5,rate_limit=0.3,seed=11")
        runs.append(
            [(p.error_status, p.rate_limit) for p in (injector.plan(has_if_match=False) for _ in range(50))]
        )
    assert runs[0] == runs[1]
    assert any(status for status, _ in runs[0]) and not all(status for status, _ in runs[0])


@pytest.mark.parametrize(
    "spec",
    [
        "error_5xx=2",
        "bogus=1",
        "maintenance=10",
        "maintenance=5..1",
        "slow_ms=-1",
        "error_5xx",
        "rate_limit=x",
        "seed=a",
        "write_answer=echo",
        "note_limit=-1",
        "note_limit=x",
    ],
)
def test_bad_fault_specs_are_refused(spec):
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


def test_note_limit_stores_the_start_of_each_note_and_answers_with_what_it_stored(generic, client):
    generic.set_faults("note_limit=5")
    body = vital(write_id="f-1", note=[{"text": "twelve chars"}, {"text": "abc"}])
    r = client.post(f"{generic.fhir_base}/Observation", json=body)
    assert r.status_code == 201 and r.json()["note"] == [{"text": "twelv"}, {"text": "abc"}]
    stored = client.get(r.headers["location"].split("/_history")[0]).json()
    assert stored["note"] == r.json()["note"]
    assert generic.faults()["fired"]["note_limit"] == 1


@pytest.mark.parametrize(
    "mode, check",
    [
        ("minimal", lambda r, stored: r.content == b""),
        ("outcome", lambda r, stored: r.json()["resourceType"] == "OperationOutcome"),
        ("wrong_type", lambda r, stored: r.json()["resourceType"] == "Basic"),
        ("wrong_id", lambda r, stored: r.json()["id"] == f"{stored['id']}-other"),
        ("wrong_version", lambda r, stored: r.json()["meta"]["versionId"] == "2"),
        ("no_location", lambda r, stored: "location" not in r.headers and r.json() == stored),
    ],
)
def test_write_answer_answers_otherwise_but_stores_as_usual(generic, client, mode, check):
    generic.set_faults(f"write_answer={mode}")
    r = post_vital(generic, client, headers={"Prefer": "return=representation"})
    assert r.status_code == 201
    (stored,) = generic.resources("Observation", identifier=f"{WB}|f-1")
    assert stored["meta"]["versionId"] == "1"
    assert check(r, stored)
    assert generic.faults()["fired"]["write_answer"] == 1
    assert generic.faults()["spec"] == f"write_answer={mode}"


def test_faults_over_http(generic, client):
    control = f"{generic.origin}/_sim/faults"
    r = client.put(control, json={"spec": "error_5xx=0.25,rate_limit=0.1,seed=7"})
    assert r.status_code == 200 and r.json()["spec"] == "error_5xx=0.25,rate_limit=0.1,seed=7"
    assert (
        client.put(control, json={"timeout_after_commit": 0.5, "stall_seconds": 2}).json()["settings"][
            "timeout_after_commit"
        ]
        == 0.5
    )
    assert client.put(control, json={"spec": "nonsense=1"}).status_code == 400
    assert client.delete(control).json()["spec"] == ""
    assert client.get(control).json()["fired"] == {}
