"""canonicalize never raises: any JSON-like input gives a CanonicalResult (and so never a 500)."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from writeback.canonical import EVENT_TYPES, CanonicalResult, canonicalize
from writeback.fhir_mapping import plan_writes
from writeback.validation.rules import check_domain

from .examples import IDENTIFIER_SYSTEM, NOW, envelope

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "mmHg", "lb", "F", "SNOMED", "2026-11-20T14:03:00Z", "03/04/2025", "active"])
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(result):
    assert isinstance(result, CanonicalResult)
    # The safety net in canonicalize must never be what caught an input.
    assert not any(i.code == "exception" for i in result.issues), result.issues
    assert result.status in (200, 400, 422)
    if result.status == 200:
        assert result.event is not None
        assert not any(i.is_error for i in result.issues)
    else:
        assert result.event is None
        assert any(i.is_error for i in result.issues)


@FUZZ
@given(json_like)
def test_arbitrary_json(value):
    check(canonicalize(value, now=NOW))


@FUZZ
@given(st.dictionaries(st.sampled_from(["tenant", "type", "occurred_at", "patient", "data", "x"]), json_like))
def test_arbitrary_envelopes(value):
    check(canonicalize(value, now=NOW))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*prefix, index))


@st.composite
def mutated_examples(draw):
    """A spec example with one to three of its values replaced by arbitrary JSON, mostly inside `data`
    (where most of the reading happens), sometimes anywhere."""
    body = envelope(draw(st.sampled_from(EVENT_TYPES)))
    for _ in range(draw(st.integers(1, 3))):
        inside_data = draw(st.integers(0, 3)) > 0
        paths = [p for p in _paths(body) if p and (not inside_data or (p[0] == "data" and len(p) > 1))]
        # An earlier replacement may have made `data` a scalar: then any path will do.
        path = draw(st.sampled_from(paths or [p for p in _paths(body) if p]))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(json_like)
    return body


@FUZZ
@given(mutated_examples())
def test_mutated_examples_and_everything_downstream(body):
    original = copy.deepcopy(body)
    result = canonicalize(body, now=NOW)
    check(result)
    assert body == original  # the input is never modified
    if result.event is not None:
        check_domain(result.event, now=NOW)
        plan_writes(result.event, identifier_system=IDENTIFIER_SYSTEM)
        assert canonicalize(result.event.to_json()).event == result.event


def _leaf_like(value):
    """Arbitrary values of the same JSON type as `value`: they get past the schema far more often."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-(10**6), max_value=10**6)
    if isinstance(value, float):
        return st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
    if isinstance(value, str):
        return st.text(max_size=30) | st.sampled_from(
            [
                "x",
                "42",
                "2026-11-20T14:03:00Z",
                "2024",
                "kg",
                "F",
                "sct",
                "LOINC",
                "active",
                "stop",
                "finished",
            ]
        )
    return st.just(value)


@st.composite
def retyped_examples(draw):
    """A spec example with some leaves replaced by other values of the same type."""
    body = envelope(draw(st.sampled_from(EVENT_TYPES)))
    leaves = [p for p in _paths(body) if p and not isinstance(_get(body, p), dict | list)]
    for path in draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=4, unique=True)):
        parent = _get(body, path[:-1])
        parent[path[-1]] = draw(_leaf_like(parent[path[-1]]))
    return body


def _get(node, path):
    for key in path:
        node = node[key]
    return node


@FUZZ
@given(retyped_examples())
def test_retyped_examples_and_everything_downstream(body):
    result = canonicalize(body, now=NOW)
    check(result)
    if result.event is not None:
        for issue in check_domain(result.event, now=NOW):
            assert issue.path
        writes, issues = plan_writes(result.event, identifier_system=IDENTIFIER_SYSTEM)
        # Canonical input always makes valid FHIR.
        assert issues == []
