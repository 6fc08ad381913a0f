"""An unreachable database: the web process answers 503 with Retry-After (an OperationOutcome for the
API, a short page for the console), never a 500 and never a success; a worker waits it out and resumes.

"Unreachable" is real, not mocked: the connection settings point at a PostgreSQL port nothing listens
on, or at an SQLite file in a directory that does not exist, so the driver itself fails to connect.
"""

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from django.db import OperationalError, connection, connections
from django.test import Client, RequestFactory
from django.utils import timezone

from tests.conftest import make_client_app, make_user
from tests.drills.conftest import database_url
from tests.writeback.canonical.examples import envelope
from tests.writeback.sync.conftest import drain, ours, post
from writeback.middleware_db import server_error
from writeback.models import AuditEntry, BusinessEvent, Write, WriteAttempt
from writeback.services.consents import consent_create
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.services.tokens import api_token_create
from writeback.states import WriteState
from writeback.sync.claim import claim_due
from writeback.sync.worker import SyncWorker


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # released on close: nothing listens there


@contextmanager
def unreachable_database(tmp_path: Path) -> Iterator[None]:
    """Points every new connection at a database that cannot be reached, then restores the settings.
    Connections already open in other threads are left as they are."""
    settings_dict = connection.settings_dict
    saved = dict(settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        settings_dict.update(HOST="127.0.0.1", PORT=str(_closed_port()))
        settings_dict.setdefault("OPTIONS", {})
        settings_dict["OPTIONS"] = {**saved.get("OPTIONS", {}), "connect_timeout": 2}
    else:
        settings_dict["NAME"] = str(tmp_path / "no-such-directory" / "db.sqlite3")
    try:
        yield
    finally:
        connection.close()
        settings_dict.clear()
        settings_dict.update(saved)


@pytest.fixture
def outage(tmp_path: Path, django_db_blocker) -> Iterator[None]:
    with django_db_blocker.unblock(), unreachable_database(tmp_path):
        yield


def _outage_event(key: str) -> dict:
    body = envelope("vitals.recorded")
    body.update(tenant="outage", idempotency_key=key, initiator={"user": "amy.clinician"})
    body["source"]["message_id"] = f"msg-{key}"
    body["patient"] = {"id": "pat-1001", "identifier": {"system": "urn:example:mrn", "value": "MRN1001"}}
    return body


def _api_post(client: Client, body: dict, token: str = "not-checked-the-database-is-away") -> object:
    return client.post(
        "/api/v1/events", body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}"
    )


def test_api_answers_503_with_retry_after_and_an_operation_outcome(outage, settings) -> None:
    settings.WRITEBACK_DB_RETRY_AFTER_SECONDS = 7
    response = _api_post(Client(), envelope("vitals.recorded"))
    assert response.status_code == 503
    assert response["Retry-After"] == "7"
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    (issue,) = body["issue"]
    assert issue["code"] == "transient"
    assert "database" in issue["diagnostics"].lower()


@pytest.mark.parametrize(
    "path", ["/api/v1/writes", "/api/v1/metrics", "/api/v1/events/00000000-0000-4000-8000-000000000000"]
)
def test_api_reads_answer_503_too(outage, path: str) -> None:
    response = Client().get(path, HTTP_AUTHORIZATION="Token whatever")
    assert response.status_code == 503, response.content[:300]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response["Retry-After"]


def test_console_answers_a_short_503_page_when_the_session_cannot_load(outage) -> None:
    """The session is read in a middleware, before any view: the 503 comes through handler500."""
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "a" * 32
    response = client.get("/")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response["Content-Type"].startswith("text/html")
    assert b"temporarily unavailable" in response.content


def test_console_sign_in_answers_503_not_500(outage) -> None:
    client = Client(raise_request_exception=False)
    response = client.post("/login/", {"username": "amy", "password": "pw"})
    assert response.status_code == 503
    assert b"temporarily unavailable" in response.content


def test_other_server_errors_still_answer_500(db) -> None:
    """Only database errors become 503: a bug stays a logged 500."""
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert "Retry-After" not in response


@pytest.mark.django_db(transaction=True)
def test_an_event_refused_during_the_outage_is_stored_once_when_sent_again(tmp_path) -> None:
    """503 means nothing was stored: the same event sent again after the outage is stored (201) once."""
    tenant = tenant_create(slug="outage", vendor="generic", base_url="http://127.0.0.1:9/fhir")
    tenant_grant(tenant=tenant, user=make_user("amy.clinician", "clinician"))
    app = make_client_app("intake-portal")
    _, token = api_token_create(user=app, tenants=[tenant], name="outage")
    consent_create(tenant=tenant, patient_ref="pat-1001", actor=None)
    body = _outage_event("outage-1")
    audit_before = AuditEntry.objects.count()

    with unreachable_database(tmp_path):
        refused = _api_post(Client(), body, token)
    assert refused.status_code == 503, refused.content[:300]
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0
    assert AuditEntry.objects.count() == audit_before

    stored = _api_post(Client(), body, token)
    assert stored.status_code == 201, stored.json()
    again = _api_post(Client(), body, token)
    assert again.status_code in (200, 201), again.json()
    assert BusinessEvent.objects.filter(idempotency_key="outage-1").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_waits_out_an_unreachable_database_and_resumes(tmp_path, settings) -> None:
    """The worker's loop meets a database it cannot reach: it backs off and keeps trying (it does not
    exit), and once the database is back it carries on and, with --until-idle, ends normally."""
    settings.WRITEBACK_DB_RECONNECT_BASE_SECONDS = 0.01
    settings.WRITEBACK_DB_RECONNECT_CAP_SECONDS = 0.05
    worker = SyncWorker(worker_id="worker:outage", concurrency=1, until_idle=True, idle_sleep=0.01)
    finished: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            finished.append(worker.run())
        except BaseException as exc:  # the test fails on it below
            errors.append(exc)
        finally:
            connections.close_all()

    with unreachable_database(tmp_path):
        thread = threading.Thread(target=run)
        thread.start()
        deadline = threading.Event()
        for _ in range(600):
            if worker.stats.db_errors >= 3 or not thread.is_alive():
                break
            deadline.wait(0.05)
        assert thread.is_alive(), errors  # still running, not exited on the error
        assert worker.stats.db_errors >= 3
    thread.join(timeout=30)
    assert not thread.is_alive() and not errors, errors
    assert finished and finished[0].db_outages == 1


def test_a_write_whose_outcome_could_not_be_recorded_is_checked_by_read_not_sent_again(live, sim, api):
    """The request left and landed, then the database failed while the outcome was being recorded. The
    worker forgets the write, hands its lease back to the ledger, and the next claimer finds it on the
    target by our identifier: committed, and never sent a second time."""
    (write,) = post(api, "problem.confirmed")
    worker = SyncWorker(worker_id="worker:blip", concurrency=1)
    (claimed,) = claim_due(worker.worker_id, 10)

    def database_gone_while_recording(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("INSERT") and "writeback_writeattempt" in sql:
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    finished = [worker._run_one(claimed)]  # sent; its outcome is recorded with the turn's others
    with connection.execute_wrapper(database_gone_while_recording), pytest.raises(OperationalError):
        worker._settle_finished(finished)  # raised to the loop, which waits for the database
    assert worker.stats.by_label["db-error"] == 1 and worker.stats.processed == 0
    assert ours(sim) == {str(write.uid): 1}  # the request did land
    stuck = Write.objects.get(pk=write.pk)
    assert (stuck.state, stuck.last_outcome, stuck.lease_owner) == (
        WriteState.PENDING,
        "in_flight",
        worker.worker_id,
    )
    assert not WriteAttempt.objects.filter(write=stuck).exists()

    worker._forget_unrecorded()  # the database is back: the lease goes back at once
    assert Write.objects.get(pk=write.pk).lease_expires_at <= timezone.now()
    assert worker.stats.unrecorded == 1

    drain()  # any worker, this one or another
    done = Write.objects.get(pk=write.pk)
    assert done.state == WriteState.COMMITTED and done.target_resource_id
    outcomes = list(WriteAttempt.objects.filter(write=done).values_list("method", "outcome"))
    assert ("GET", WriteAttempt.Outcome.FOUND) in outcomes
    assert not any(method == "POST" for method, _ in outcomes)  # never sent again
    assert ours(sim) == {str(write.uid): 1}
    posts = [r for r in sim.requests(100) if r["method"] == "POST" and "/Condition" in r["path"]]
    assert len(posts) == 1, posts


def test_a_write_still_recorded_after_all_is_not_handed_back(live, sim, api):
    """The commit landed and only its answer was lost: the ledger already holds the outcome, and the
    hand-back leaves the write alone."""
    (write,) = post(api, "problem.confirmed")
    worker = SyncWorker(worker_id="worker:blip", concurrency=1)
    (claimed,) = claim_due(worker.worker_id, 10)
    worker._settle_finished([worker._run_one(claimed)])
    assert worker.stats.by_label["committed"] == 1
    worker._note_unrecorded(claimed)
    worker._forget_unrecorded()
    done = Write.objects.get(pk=write.pk)
    assert done.state == WriteState.COMMITTED and done.lease_owner == "" and done.lease_expires_at is None
    assert worker.stats.unrecorded == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_intake_whose_connection_dies_mid_transaction_answers_503_and_stores_nothing() -> None:
    """The server ends the request's session between the event's INSERT and its writes' (what a restart
    or a failover does): the answer is 503, never 201 or 500, and nothing of the event is stored."""
    tenant = tenant_create(slug="outage", vendor="generic", base_url="http://127.0.0.1:9/fhir")
    tenant_grant(tenant=tenant, user=make_user("amy.clinician", "clinician"))
    _, token = api_token_create(user=make_client_app("intake-portal"), tenants=[tenant], name="outage")
    consent_create(tenant=tenant, patient_ref="pat-1001", actor=None)
    body = _outage_event("outage-cut")
    audit_before = AuditEntry.objects.count()
    cut: list[int] = []

    def server_ends_the_session(execute, sql, params, many, context):
        if not cut and sql.lstrip().upper().startswith("INSERT") and '"writeback_write"' in sql:
            pid = connection.connection.info.backend_pid
            with psycopg.connect(database_url(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            cut.append(pid)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(server_ends_the_session):
        answer = _api_post(Client(raise_request_exception=False), body, token)
    assert cut, "the intake never reached the writes' INSERT"
    assert answer.status_code == 503, answer.content[:500]
    assert answer.json()["resourceType"] == "OperationOutcome"
    connection.close()
    assert not BusinessEvent.objects.filter(idempotency_key="outage-cut").exists()
    assert not Write.objects.exists()
    assert AuditEntry.objects.count() == audit_before

    again = _api_post(Client(), body, token)  # the client's retry after Retry-After
    assert again.status_code == 201, again.json()
    assert BusinessEvent.objects.filter(idempotency_key="outage-cut").count() == 1
