"""Logs: one JSON object per line with the context of the line, and none of the PHI an event carried.

The PHI test runs the metrics scenario (intake, a retry, a send whose answer was lost, an approval, a
duplicate, a conflict, a write that fails for good) with distinctive clinical values, captures every
log record at DEBUG through the handler settings.LOGGING configures, and looks for those values."""

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.test import RequestFactory

from tests.writeback.helpers import event
from tests.writeback.sync.conftest import drain
from tests.writeback.test_metrics import scenario
from writeback import logcontext
from writeback.models import BusinessEvent, Write

pytestmark = pytest.mark.django_db

PHI = {
    "text": "Zebulon Quixwright reports a xylophone-shaped rash",
    "note": "Quixwright-Marigold family history of Vexmoor syndrome",
    "dosage": "7 mg Zorbotriptan at moonrise",
    "phone": "+1 555 867 5309",
    "answer": "Headache since the Thistlewick accident",
}
# Pieces that must not appear either (a message may quote part of a value).
FRAGMENTS = ["Quixwright", "Zorbotriptan", "867 5309", "Thistlewick", "Vexmoor", "xylophone", "MRN1001"]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, formatted by the handler settings.LOGGING configures."""
    configured = django_settings.LOGGING
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    spec = dict(configured["formatters"]["json"])  # configure_formatter consumes its keys
    handler.setFormatter(logging.config.DictConfigurator(configured).configure_formatter(spec))
    handler.addFilter(logcontext.ContextFilter())
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore", "django")}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_no_phi_in_any_log_line_of_a_full_scenario(
    live, sim, api, clinician2, settings, captured, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        out = scenario(api, sim, clinician2, settings, phi=PHI)
        # A refused event (422: a future time) and one with a reused key (409) log their requests too.
        bad = event("note.signed", key="s-refused", text=PHI["text"])
        bad["occurred_at"] = "2099-01-01T00:00:00Z"
        assert api.post("/api/v1/events", bad, format="json").status_code == 422
        reused = event("note.signed", key="s-note", text=PHI["text"] + " (edited)")
        assert api.post("/api/v1/events", reused, format="json").status_code == 409

    # The PHI went in: it is in the ledger and on the target.
    assert PHI["text"] in json.dumps(BusinessEvent.objects.get(idempotency_key="s-note").raw_payload)
    assert any(PHI["dosage"] in json.dumps(r) for r in sim.resources("MedicationStatement"))

    text = captured.getvalue()
    lines = _lines(captured)
    assert len(lines) > 20, "the scenario logs (retries, timeouts, the 4xx answers)"
    for value in [*PHI.values(), *FRAGMENTS]:
        assert value not in text, value
    # Every line has the same fields; lines about a write name it, its tenant, event type and the
    # correlation id the write carries from its event.
    assert all(set(logcontext.FIELDS) <= set(line) for line in lines)
    writes = {str(w.uid): w for w in Write.objects.select_related("event")}
    about_writes = [line for line in lines if line["write_id"]]
    assert {line["write_id"] for line in about_writes} >= {
        str(out["found"][0].uid),
        str(out["failed"][0].uid),
    }
    for line in about_writes:
        write = writes[line["write_id"]]
        assert line["correlation_id"] == write.correlation_id != ""
        assert line["tenant"] == live.slug and line["event_type"] == write.event.type
    answers = [line for line in lines if line["logger"] == "django.request"]
    assert answers and all(line["request_id"] and line["correlation_id"] for line in answers)


def test_one_write_can_be_followed_from_the_request_to_the_vendor(live, sim, api, captured):
    """The client's X-Correlation-ID becomes the event's and the write's, and the worker's log lines
    and its requests to the EHR carry it."""
    r = api.post(
        "/api/v1/events",
        event("problem.confirmed", key="followed"),
        format="json",
        HTTP_X_CORRELATION_ID="corr-followed-1",
        HTTP_X_REQUEST_ID="req-followed-1",
    )
    assert r.status_code == 201 and r["X-Request-ID"] == "req-followed-1"
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    assert write.correlation_id == write.event.correlation_id == "corr-followed-1"
    sim.set_faults("error_5xx=1,seed=1")
    drain()
    lines = [line for line in _lines(captured) if line["write_id"] == str(write.uid)]
    assert lines and all(line["correlation_id"] == "corr-followed-1" for line in lines)
    sent = [
        {k.lower(): v for k, v in q["headers"].items()}
        for q in sim.requests(200)
        if "/Condition" in q["path"]
    ]
    assert sent and all(h.get("x-correlation-id") == "corr-followed-1" for h in sent)


def test_a_hostile_request_id_is_replaced(captured):
    """A client's id goes into logs and the audit trail: anything but a plain token is replaced."""
    seen = {}

    def view(request):
        logging.getLogger("writeback.test").warning("inside the request")
        seen["id"] = logcontext.request_id(request)
        from django.http import HttpResponse

        return HttpResponse("ok")

    middleware = logcontext.RequestContextMiddleware(view)
    forged = 'x"}\n{"level": "ERROR", "message": "forged'
    response = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID=forged, HTTP_X_CORRELATION_ID="a b"))
    assert seen["id"] != forged and len(seen["id"]) == 32 and response["X-Request-ID"] == seen["id"]
    (line,) = [line for line in _lines(captured) if line["logger"] == "writeback.test"]
    assert line["request_id"] == seen["id"] and line["correlation_id"] not in ("", "a b")
    assert "forged" not in captured.getvalue()
    # The context ends with the request.
    assert logcontext.current() == {}


def test_query_strings_and_request_objects_stay_out_of_the_logs(captured):
    """A console search puts a patient's name in the query string: the development server's access
    line drops it, and the request object Django attaches to its lines is not printed."""
    request = RequestFactory().get("/writes", {"q": "Quixwright"})
    logging.getLogger("django.request").warning(
        "Not Found: %s", request.path, extra={"request": request, "status_code": 404}
    )
    (line,) = _lines(captured)
    assert "request" not in line and line["status_code"] == 404
    assert "Quixwright" not in captured.getvalue()

    server = logging.getLogger("django.server")
    assert any(isinstance(f, logcontext.NoQueryStrings) for f in server.filters)
    record = server.makeRecord(
        "django.server",
        logging.INFO,
        "",
        0,
        '"%s" %s %s',
        ("GET /writes?q=Quixwright HTTP/1.1", "200", "5"),
        None,
    )
    assert all(f.filter(record) for f in server.filters)
    assert record.getMessage() == '"GET /writes?... HTTP/1.1" 200 5'
