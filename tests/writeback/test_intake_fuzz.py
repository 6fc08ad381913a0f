"""No input ever produces a 500: arbitrary JSON, and the spec's events with any part replaced."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.writeback.helpers import EVENT_TYPES, consent_for, event

URL = "/api/v1/events"
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        ["", "03/04/2025", "2026-11-20", "2999-01-01T00:00:00Z", "mmHg", "kg", "SNOMED", "-1", "1e309"]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(body, path, new):
    if not path:
        return new
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return body


@pytest.fixture
def ready(api, tenant, clinician):
    consent_for(tenant)
    return api


@FUZZ
@given(body=json_value)
def test_arbitrary_json_never_500(ready, body):
    r = ready.post(URL, json.dumps(body), content_type="application/json")
    assert r.status_code < 500, r.content[:500]
    assert r.json()["resourceType"] == "OperationOutcome" or r.status_code in (200, 201)


@FUZZ
@given(event_type=st.sampled_from(EVENT_TYPES), data=st.data(), replacement=json_value)
def test_spec_events_with_any_part_replaced_never_500(ready, event_type, data, replacement):
    body = event(event_type, key=f"fuzz-{data.draw(st.integers(0, 10**9))}")
    paths = [p for p in _paths(body) if p]
    path = data.draw(st.sampled_from(paths))
    mutated = _replace(copy.deepcopy(body), path, replacement)
    r = ready.post(URL, mutated, format="json")
    assert r.status_code < 500, (path, r.content[:500])
    if r.status_code >= 400:
        assert r.json()["resourceType"] == "OperationOutcome"
        for issue in r.json()["issue"]:
            assert issue["details"]["coding"][0]["code"]
