"""Deployment guards: the demo refuses a real database, the web entry points refuse the development key
with DEBUG off, and the demo's token and tenant changes stay within its own tenants."""

import io
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from adapters.simulator import start_simulator
from writeback import demo, deploy
from writeback.models import ApiToken, AuditEntry, Tenant
from writeback.services.tenants import tenant_create, tenant_set_base_url

ROOT = Path(__file__).resolve().parents[2]
# Parsed, never connected to: the demo must refuse before it touches the database.
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/wb_demo_guard_never_created"


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL")}
    clean["DJANGO_SETTINGS_MODULE"] = "writeback.settings"
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_demo_refuses_a_postgresql_database():
    done = run(["manage.py", "demo", "--port", "0"], DATABASE_URL=POSTGRES_URL)
    assert done.returncode == 1
    assert "demo refuses to run: the database is postgresql" in done.stderr
    assert "wb_demo_guard_never_created" in done.stderr and "--i-know-this-is-not-production" in done.stderr
    assert "Console" not in done.stdout  # nothing started, no token printed


@pytest.mark.postgres
def test_demo_refuses_the_database_it_runs_on(db):
    with pytest.raises(CommandError, match="not a local SQLite file"):
        call_command("demo", "--port", "0")
    assert not User.objects.filter(username__in=[u for u, _ in demo.PEOPLE]).exists()
    assert not Tenant.objects.exists()


def test_sqlite_is_what_the_demo_accepts(db):
    from django.db import connection

    if connection.vendor == "sqlite":
        assert demo.database_problem() == ""
    else:
        assert "postgresql" in demo.database_problem()


@pytest.mark.parametrize("module", ["writeback.wsgi", "writeback.asgi"])
def test_servers_refuse_the_development_key_with_debug_off(module):
    done = run(["-c", f"import {module}"], DEBUG="0")
    assert done.returncode != 0
    assert "ImproperlyConfigured: Refusing to serve with DEBUG off" in done.stderr
    short = run(["-c", f"import {module}"], DEBUG="0", SECRET_KEY="too-short")
    assert short.returncode != 0 and "shorter than 50 characters" in short.stderr


@pytest.mark.parametrize("module", ["writeback.wsgi", "writeback.asgi"])
def test_servers_start_with_a_real_key_or_in_debug(module):
    key = secrets.token_urlsafe(64)
    assert run(["-c", f"import {module}; print({module}.application)"], SECRET_KEY=key).returncode == 0
    assert run(["-c", f"import {module}"], DEBUG="1").returncode == 0


def test_the_guard_in_process(settings, monkeypatch):
    settings.DEBUG = False
    settings.SECRET_KEY = deploy.DEVELOPMENT_SECRET_KEY
    with pytest.raises(ImproperlyConfigured, match="development key"):
        deploy.refuse_unsafe_start()
    settings.SECRET_KEY = "django-insecure-" + "x" * 60
    with pytest.raises(ImproperlyConfigured, match="placeholder"):
        deploy.refuse_unsafe_start()
    settings.SECRET_KEY = secrets.token_urlsafe(64)
    deploy.refuse_unsafe_start()
    # The demo says it runs the development server locally: then the key is allowed.
    settings.SECRET_KEY = deploy.DEVELOPMENT_SECRET_KEY
    monkeypatch.setattr(deploy, "_development_key_allowed", False)
    deploy.allow_development_key()
    deploy.refuse_unsafe_start()


def test_production_settings_refuse_the_development_key():
    code = "import django; django.setup()"
    done = run(["-c", code], DJANGO_SETTINGS_MODULE="writeback.production_settings")
    assert done.returncode != 0 and "SECRET_KEY is unset" in done.stderr


def test_changing_a_tenants_base_url_is_audited(tenant):
    tenant_set_base_url(tenant=tenant, base_url="http://127.0.0.1:8101/fhir/", actor="ops", reason="moved")
    tenant.refresh_from_db()
    assert tenant.base_url == "http://127.0.0.1:8101/fhir"
    [entry] = AuditEntry.objects.filter(action="tenant.base_url_changed")
    assert entry.actor == "ops" and entry.tenant == tenant.slug
    assert entry.data == {
        "old": "http://127.0.0.1:9/fhir",
        "new": "http://127.0.0.1:8101/fhir",
        "reason": "moved",
    }


def test_an_engineer_of_another_tenant_cannot_repoint_it(tenant, outsider):
    from writeback.services.permissions import ActionRefused

    with pytest.raises(ActionRefused):
        tenant_set_base_url(tenant=tenant, base_url="http://evil.example/fhir", actor=outsider)
    tenant.refresh_from_db()
    assert tenant.base_url == "http://127.0.0.1:9/fhir"
    assert not AuditEntry.objects.filter(action="tenant.base_url_changed").exists()


@pytest.mark.django_db(transaction=True)
def test_the_demo_token_reaches_only_the_demo_tenants_and_repointing_is_audited():
    real = tenant_create(slug="hospital-prod", vendor="epic", base_url="https://ehr.hospital.example/fhir")
    sims = {p: start_simulator(p, seed="demo") for p in demo.PROFILES}
    try:
        state = demo.seed(sims, io.StringIO())
        generic = Tenant.objects.get(slug="generic-main")
        tenant_set_base_url(tenant=generic, base_url="http://127.0.0.1:9/fhir", actor="tests")
        demo.seed(sims, io.StringIO())  # a restart: the simulators' URLs are put back, audited
    finally:
        for sim in sims.values():
            sim.stop()
    token = ApiToken.objects.filter(name="demo").order_by("-id").first()
    slugs = set(token.tenants.values_list("slug", flat=True))
    assert real.slug not in slugs and slugs == {s["slug"] for s in demo._tenant_specs(sims)}
    assert state.api.get(f"/api/v1/writes?tenant={real.slug}").status_code == 403
    moved = AuditEntry.objects.filter(action="tenant.base_url_changed", tenant="generic-main", actor="demo")
    assert moved.count() == 1 and moved.get().data["new"] == sims["generic"].fhir_base
    assert Tenant.objects.get(slug=real.slug).base_url == "https://ehr.hospital.example/fhir"
