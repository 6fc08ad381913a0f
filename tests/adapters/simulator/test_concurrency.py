"""Several client threads at once: keep-alive throughput, atomic conditional create, no lost versions."""

import threading
import time

import httpx

from .conftest import WB, vital


def run_threads(count, work):
    errors = []

    def guarded(n):
        try:
            work(n)
        except Exception as exc:  # surfaced below: a thread's assertion must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors


def test_concurrent_conditional_creates_store_each_identifier_once(generic):
    def work(n):
        with httpx.Client(timeout=10) as c:
            for i in range(40):
                write_id = f"c-{i}"  # every thread replays the same 40 writes
                r = c.post(
                    f"{generic.fhir_base}/Observation",
                    json=vital(write_id=write_id),
                    headers={"If-None-Exist": f"identifier={WB}|{write_id}", "Prefer": "return=minimal"},
                )
                assert r.status_code in (200, 201)

    run_threads(6, work)
    counts = generic.count_by_identifier(WB)
    assert len(counts) == 40 and set(counts.values()) == {1}


def test_concurrent_if_match_updates_never_lose_a_version(generic):
    url = f"{generic.fhir_base}/Task/task-1001"
    outcomes = []

    def work(n):
        with httpx.Client(timeout=10) as c:
            for _ in range(15):
                current = c.get(url)
                task = current.json() | {"description": f"thread {n}"}
                r = c.put(url, json=task, headers={"If-Match": current.headers["etag"]})
                outcomes.append(r.status_code)

    run_threads(4, work)
    assert set(outcomes) <= {200, 412}
    final = httpx.get(url).json()
    assert int(final["meta"]["versionId"]) == 1 + outcomes.count(200)


def test_hundreds_of_requests_per_second_from_several_threads(generic):
    per_thread, threads = 150, 4
    started = time.perf_counter()

    def work(n):
        with httpx.Client(timeout=10) as c:
            for i in range(per_thread):
                c.post(f"{generic.fhir_base}/Observation", json=vital(write_id=f"t{n}-{i}"))
                c.get(f"{generic.fhir_base}/Patient/pat-{1001 + i}")

    run_threads(threads, work)
    rate = 2 * per_thread * threads / (time.perf_counter() - started)
    assert rate > 200, f"{rate:.0f} req/s"
    assert len(generic.count_by_identifier(WB)) == per_thread * threads
