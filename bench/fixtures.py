"""Benchmark data, made inside Django against the database named by DATABASE_URL.

    python bench/fixtures.py template             # migrate; tenant, people, API token, consents -> token
    python bench/fixtures.py writes --count N ... # N pending Observation writes (cloned in SQL from one
                                                  # write made by the real intake API); --discover reads
                                                  # the target's /metadata first

The writes command posts one real vitals event through the API, then copies its first write N times in
one INSERT ... SELECT (fresh uid, patient, stream and correlation id each), so 50,000 writes take seconds
and every copy has exactly the shape intake gives.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writeback.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from events import PATIENTS, TENANT, vitals_event  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from writeback.models import ApiToken, Tenant, Write  # noqa: E402
from writeback.services.consents import consent_create  # noqa: E402
from writeback.services.discovery import capabilities_discover  # noqa: E402
from writeback.services.permissions import client_app_enroll, grant_action_permission  # noqa: E402
from writeback.services.tenants import tenant_create, tenant_grant  # noqa: E402
from writeback.services.tokens import api_token_create  # noqa: E402
from writeback.states import WriteState  # noqa: E402


def _user(username: str, *roles: str) -> User:
    user = User.objects.create_user(username=username, password="bench-only", email=f"{username}@example.org")
    for role in roles:
        user.groups.add(Group.objects.get(name=role))
    return user


def template(_: argparse.Namespace) -> dict:
    call_command("migrate", verbosity=0)
    tenant = tenant_create(
        slug=TENANT, vendor="generic", base_url="http://127.0.0.1:9/fhir", max_concurrency=16
    )
    for user in (_user("amy.clinician", "clinician"), _user("ada.admin", "admin")):
        tenant_grant(tenant=tenant, user=user)
    for n in PATIENTS:
        consent_create(tenant=tenant, patient_ref=f"pat-{n}", actor=None)
    portal = _user("intake-portal")
    # A client app posting in its clinicians' names, as `create_api_token --on-behalf` makes one.
    client_app_enroll(portal, actor="bench")
    grant_action_permission(portal, "submit_on_behalf", actor="bench")
    _, key = api_token_create(user=portal, tenants=[tenant], name="bench")
    return {"token": key}


def writes(args: argparse.Namespace) -> dict:
    tenant = Tenant.objects.get(slug=TENANT)
    Tenant.objects.filter(pk=tenant.pk).update(
        base_url=args.base_url.rstrip("/"), max_concurrency=args.max_concurrency
    )
    if args.discover:
        # As an engineer would before the first write: read the server's /metadata, so the capability
        # registry (and conditional create) reflects what this server declares.
        tenant.refresh_from_db()
        report = capabilities_discover(tenant=tenant, actor="bench")
        if not report.ok:
            raise SystemExit(str(report))
    client = APIClient()
    token = ApiToken.objects.first()
    client.force_authenticate(user=token.user, token=token)
    response = client.post("/api/v1/events", vitals_event("bench-seed", 1001, measurements=1), format="json")
    assert response.status_code == 201, response.content
    seed = Write.objects.get(uid=response.json()["writes"][0]["id"])
    if args.count > 1:
        _clone(seed, args.count - 1, args.patients, args.states)
    if args.states == "mixed":
        Write.objects.filter(pk=seed.pk).update(state=WriteState.COMMITTED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE writeback_write")
    return {
        "writes": Write.objects.count(),
        "pending": Write.objects.filter(state=WriteState.PENDING).count(),
    }


def _clone(seed: Write, count: int, patients: int, states: str) -> None:
    """INSERT ... SELECT: `count` copies of `seed`, spread over `patients` streams (pat-1001 upward)."""
    fixed = [
        f.column
        for f in Write._meta.concrete_fields
        if f.column not in ("id", "uid", "patient_ref", "stream_key", "correlation_id", "payload", "state")
    ]
    patient = f"'pat-' || (1001 + mod(g, {patients}))"
    state = (
        "(ARRAY['committed','committed','committed','committed','failed_terminal','conflict',"
        "'pending','failed_retryable'])[1 + mod(g, 8)]"
        if states == "mixed"
        else "'pending'"
    )
    columns = ", ".join(fixed)
    sql = f"""
        INSERT INTO writeback_write (uid, patient_ref, stream_key, correlation_id, payload, state, {columns})
        SELECT gen_random_uuid(), {patient}, %(tenant)s || ':' || {patient} || ':Observation',
               'bench-' || g,
               jsonb_set(w.payload, '{{subject,reference}}', to_jsonb('Patient/' || {patient})),
               {state}, {", ".join("w." + c for c in fixed)}
        FROM writeback_write w, generate_series(1, %(count)s) AS g
        WHERE w.id = %(seed)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"tenant": str(seed.tenant_id), "count": count, "seed": seed.pk})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("template").set_defaults(run=template)
    w = sub.add_parser("writes")
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--base-url", default="http://127.0.0.1:9/fhir")
    w.add_argument("--max-concurrency", type=int, default=16)
    w.add_argument("--patients", type=int, default=200, help="streams (patients pat-1001 upward)")
    w.add_argument("--states", choices=("pending", "mixed"), default="pending")
    w.add_argument("--discover", action="store_true", help="discover the target's capabilities first")
    w.set_defaults(run=writes)
    args = parser.parse_args()
    print(json.dumps(args.run(args)))


if __name__ == "__main__":
    main()
