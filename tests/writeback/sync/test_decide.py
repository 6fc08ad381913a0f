"""One decision: the console's plan view and the worker reach the same step for the same write.

Each case sets up one combination (mode, holds, consent, capability, patient binding, authority) on a
queued write, asks the plan view what will happen, then runs the worker and checks that it took the very
step the plan predicted, and that the ledger and the target show it."""

from collections.abc import Callable

import pytest

from tests.console.conftest import HTMX, client_for
from tests.writeback.sync.conftest import drain, ours, post
from writeback.models import ApiToken, Capability, KillSwitch, TenantMode, Write
from writeback.services import decide
from writeback.services.consents import consent_revoke
from writeback.services.plans import write_plan
from writeback.services.tokens import api_token_revoke
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


def _mode(mode: str) -> Callable:
    def apply(ctx) -> None:
        ctx["tenant"].mode = mode
        ctx["tenant"].save(update_fields=["mode"])

    return apply


def _revoke_consent(ctx) -> None:
    for consent in ctx["tenant"].consents.filter(patient_ref="pat-1001"):
        consent_revoke(consent=consent, actor=None, reason="patient withdrew")


def _narrow_capability(ctx) -> None:
    Capability.objects.filter(
        tenant=ctx["tenant"], resource_type="Condition", operation="create", source="manual"
    ).update(allowed=False)


def _rebind(ctx) -> None:
    # An edit in the database that points the payload at another patient's chart.
    write = ctx["write"]
    payload = {**write.payload, "subject": {"reference": "Patient/pat-9999"}}
    Write.objects.filter(pk=write.pk).update(payload=payload)


def _deactivate_initiator(ctx) -> None:
    ctx["clinician"].is_active = False
    ctx["clinician"].save(update_fields=["is_active"])


def _revoke_token(ctx) -> None:
    for token in ApiToken.objects.filter(user=ctx["app_user"]):
        api_token_revoke(token=token)


def _hold(behaviour: str) -> Callable:
    def apply(ctx) -> None:
        KillSwitch.objects.create(
            scope="tenant",
            tenant=ctx["tenant"],
            behaviour=behaviour,
            reason="maintenance",
            created_by=ctx["engineer"],
        )

    return apply


# (setups, the step both must reach, its code, the write's state after the worker ran)
CASES = {
    "live": ([], decide.SEND, "", WriteState.COMMITTED),
    "dry-run": ([_mode(TenantMode.DRY_RUN)], decide.PREVIEW, "dry-run", WriteState.PREVIEWED),
    "shadow": ([_mode(TenantMode.SHADOW)], decide.SHADOW, "shadow", WriteState.SHADOWED),
    "paused": ([_mode(TenantMode.PAUSED)], decide.HELD, "paused", WriteState.PENDING),
    "kill-switch-hold": ([_hold("hold")], decide.HELD, "hold", WriteState.PENDING),
    "kill-switch-drain": ([_hold("drain")], decide.HELD, "drain", WriteState.PENDING),
    "consent-revoked": ([_revoke_consent], decide.REFUSE, "consent-revoked", WriteState.FAILED_TERMINAL),
    "capability-narrowed": ([_narrow_capability], decide.REFUSE, None, WriteState.FAILED_TERMINAL),
    "rebound-payload": ([_rebind], decide.REFUSE, "patient-binding", WriteState.FAILED_TERMINAL),
    "initiator-lapsed": (
        [_deactivate_initiator],
        decide.HELD_AUTHORIZATION,
        "initiator-lapsed",
        WriteState.HELD_AUTHORIZATION,
    ),
    "token-revoked": (
        [_revoke_token],
        decide.HELD_AUTHORIZATION,
        "token-revoked",
        WriteState.HELD_AUTHORIZATION,
    ),
    # Combinations: the order of the checks decides.
    "dry-run-and-consent-revoked": (
        [_mode(TenantMode.DRY_RUN), _revoke_consent],
        decide.PREVIEW,
        "dry-run",
        WriteState.PREVIEWED,
    ),
    "shadow-and-rebound": ([_mode(TenantMode.SHADOW), _rebind], decide.SHADOW, "shadow", WriteState.SHADOWED),
    "paused-and-consent-revoked": (
        [_mode(TenantMode.PAUSED), _revoke_consent],
        decide.HELD,
        "paused",
        WriteState.PENDING,
    ),
    "hold-and-shadow": ([_mode(TenantMode.SHADOW), _hold("hold")], decide.HELD, "hold", WriteState.PENDING),
    "rebound-and-consent-revoked": (
        [_rebind, _revoke_consent],
        decide.REFUSE,
        "patient-binding",
        WriteState.FAILED_TERMINAL,
    ),
    "consent-revoked-and-capability-narrowed": (
        [_revoke_consent, _narrow_capability],
        decide.REFUSE,
        "consent-revoked",
        WriteState.FAILED_TERMINAL,
    ),
    "capability-narrowed-and-initiator-lapsed": (
        [_narrow_capability, _deactivate_initiator],
        decide.REFUSE,
        None,
        WriteState.FAILED_TERMINAL,
    ),
    "consent-revoked-and-token-revoked": (
        [_revoke_consent, _revoke_token],
        decide.REFUSE,
        "consent-revoked",
        WriteState.FAILED_TERMINAL,
    ),
}


@pytest.fixture
def worker_steps(monkeypatch) -> list[decide.Step]:
    """Every step the worker's full decision reached (the plan view is asked before this is set)."""
    steps: list[decide.Step] = []
    real = decide.Inputs.decide

    def spy(self, *args, **kwargs):
        step = real(self, *args, **kwargs)
        steps.append(step)
        return step

    monkeypatch.setattr(decide.Inputs, "decide", spy)
    return steps


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_view_and_the_worker_reach_the_same_step(
    case, live, sim, api, clinician, app_user, engineer, request
):
    setups, kind, code, state_after = CASES[case]
    (write,) = post(api, "problem.confirmed")
    ctx = {"tenant": live, "write": write, "clinician": clinician, "app_user": app_user, "engineer": engineer}
    for setup in setups:
        setup(ctx)
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)

    planned = write_plan(write, read_target=False).step
    assert planned is not None and planned.kind == kind, (planned, case)
    if code is not None:
        assert planned.code == code

    steps = request.getfixturevalue("worker_steps")
    drain()
    write.refresh_from_db()
    assert write.state == state_after, (write.state, write.last_error)
    if kind in (decide.HELD,):
        # Held writes are not claimed (or given back untouched): the worker never reached its full
        # decision for them, and nothing reached the target.
        assert steps == [] and ours(sim) == {}
        return
    (worker,) = steps
    assert (worker.kind, worker.code) == (planned.kind, planned.code)
    if kind == decide.SEND:
        assert sum(ours(sim).values()) == 1
    else:
        assert ours(sim) == {}
    if kind == decide.REFUSE:
        assert write.last_error.startswith(f"{planned.code}: ")


@pytest.mark.parametrize("setup", [_revoke_consent, _narrow_capability], ids=["consent", "capability"])
def test_the_plan_never_predicts_sending_what_the_worker_refuses(setup, live, sim, api, admin_user):
    (write,) = post(api, "problem.confirmed")
    setup({"tenant": live, "write": write})
    body = client_for(admin_user).post(f"/writes/{write.uid}/plan", **HTMX).content.decode()
    assert "Creates a new Condition" not in body
    assert "Refused before sending" in body
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.FAILED_TERMINAL and ours(sim) == {}


def test_an_input_the_caller_did_not_load_refuses_the_write(live, api):
    """Fail closed: a caller that skips a check cannot turn it into a send."""
    from writeback.services.holds import Holds

    (write,) = post(api, "problem.confirmed")
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)
    step = decide.Inputs().decide(write, write.tenant, Holds(), None)
    assert step.kind == decide.REFUSE and step.code == "not-checked"


def test_next_step_called_without_the_binding_or_authority_refuses(live, api):
    from writeback.services.consents import ConsentDecision
    from writeback.services.contract import TenantContract
    from writeback.services.holds import Holds

    (write,) = post(api, "problem.confirmed")
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)
    args = (
        write,
        write.tenant,
        Holds(),
        TenantContract.load(write.tenant),
        None,
        ConsentDecision(ok=True),
        None,
    )
    assert decide.next_step(*args, binding="", authorization=None).kind == decide.SEND
    assert decide.next_step(*args, authorization=None).code == "not-checked"
    assert decide.next_step(*args, binding="").code == "not-checked"


@pytest.mark.parametrize("edit", ["payload-changed", "approval-expired"])
def test_an_approval_that_no_longer_covers_the_write_is_predicted_and_asked_again(
    edit, live, sim, api, clinician2, worker_steps_later
):
    from datetime import timedelta

    from django.utils import timezone

    from writeback.models import Approval
    from writeback.services.approvals import write_approve

    (write,) = post(api, "medication.reconciled")
    approval = write_approve(write=write, user=clinician2, rationale="reviewed with the patient")
    if edit == "payload-changed":
        Write.objects.filter(pk=write.pk).update(payload_hash="edited-after-approval")
    else:
        Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)
    assert write.state == WriteState.PENDING

    planned = write_plan(write, read_target=False)
    assert (planned.step.kind, planned.step.code) == (decide.APPROVAL, "approval-lapsed")
    assert planned.prediction.kind == "waiting"
    steps = worker_steps_later()
    drain()
    (worker,) = steps
    assert (worker.kind, worker.code) == (planned.step.kind, planned.step.code)
    write.refresh_from_db()
    assert write.state == WriteState.AWAITING_APPROVAL and ours(sim) == {}


@pytest.fixture
def worker_steps_later(request):
    return lambda: request.getfixturevalue("worker_steps")
