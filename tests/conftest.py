"""Shared fixtures: people in each role, tenants, consents, API clients.

Test data is made through the real services (tenant_create, api_token_create, consent_create) so tests
exercise the same paths as production.
"""

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.test import APIClient

from adapters.simulator import start_simulator
from writeback.services.consents import consent_create
from writeback.services.discovery import capabilities_discover
from writeback.services.permissions import client_app_enroll, grant_action_permission
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.services.tokens import api_token_create


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests (row locks, SKIP LOCKED, several processes) are deselected, not skipped,
    on the SQLite pass; the CI's PostgreSQL pass runs them."""
    from django.conf import settings

    if "postgresql" in settings.DATABASES["default"]["ENGINE"]:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("postgres") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _migration_data(request):
    """Transactional tests end with a flush that also empties what the data migration loaded (roles,
    the default contract); put it back for them."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
        from django.contrib.auth.models import Group

        from writeback.contract_defaults import install_defaults
        from writeback.models import ContractRule

        install_defaults(Group, ContractRule)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness costs ~0.3 s per user; tests make many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_user(username: str, *roles: str, password: str = "pw-for-tests-only") -> User:
    user = User.objects.create_user(username=username, password=password, email=f"{username}@example.org")
    for role in roles:
        user.groups.add(Group.objects.get(name=role))
    return user


def make_client_app(username: str, *, on_behalf: bool = True) -> User:
    """A client app's service account (role client_app), as `create_api_token` makes one; `on_behalf`:
    it may name a clinician of its tenants as an event's initiator (the spec's examples do)."""
    user = make_user(username)
    client_app_enroll(user, actor="tests")
    if on_behalf:
        grant_action_permission(user, "submit_on_behalf", actor="tests")
    return user


@pytest.fixture
def tenant(db):
    return tenant_create(slug="generic-main", vendor="generic", base_url="http://127.0.0.1:9/fhir")


@pytest.fixture
def other_tenant(db):
    return tenant_create(slug="other", vendor="generic", base_url="http://127.0.0.1:9/fhir")


def granted_user(tenant, username: str, *groups: str):
    """A user in `groups`, granted `tenant`."""
    user = make_user(username, *groups)
    tenant_grant(tenant=tenant, user=user)
    return user


@pytest.fixture
def clinician(db, tenant):
    return granted_user(tenant, "amy.clinician", "clinician")


@pytest.fixture
def clinician2(db, tenant):
    return granted_user(tenant, "bob.clinician", "clinician")


@pytest.fixture
def admin_user(db, tenant):
    return granted_user(tenant, "ada.admin", "admin")


@pytest.fixture
def engineer(db, tenant):
    return granted_user(tenant, "eve.engineer", "integration_engineer")


@pytest.fixture
def engineer2(db, tenant):
    return granted_user(tenant, "ed.engineer", "integration_engineer")


@pytest.fixture
def auditor(db, tenant):
    return granted_user(tenant, "al.auditor", "auditor")


@pytest.fixture
def outsider(db, other_tenant):
    """A clinician of another tenant: must see and touch nothing of `tenant`."""
    user = make_user("olga.outsider", "clinician", "admin")
    tenant_grant(tenant=other_tenant, user=user)
    return user


@pytest.fixture
def app_user(db, tenant):
    """The service account a client app posts events as (in the name of its clinicians)."""
    return make_client_app("intake-portal")


@pytest.fixture
def api(app_user, tenant):
    """An API client authenticated with a token scoped to `tenant`."""
    _, key = api_token_create(user=app_user, tenants=[tenant], name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def api_client_for(user, *tenants) -> APIClient:
    _, key = api_token_create(user=user, tenants=list(tenants), name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def is_postgres(db) -> bool:
    return connection.vendor == "postgresql"


# -- the EHR simulator -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generic_sim():
    sim = start_simulator("generic", seed="demo")
    yield sim
    sim.stop()


@pytest.fixture
def sim(generic_sim):
    generic_sim.reset(seed="demo")
    return generic_sim


@pytest.fixture
def live(tenant, sim, clinician, api, settings):
    """The test tenant pointed at the simulator, with consent for the demo patients, and fast retries."""
    settings.WRITEBACK_BACKOFF_BASE_SECONDS = 0.01
    settings.WRITEBACK_HTTP_READ_TIMEOUT = 2.0
    tenant.base_url = sim.fhir_base
    tenant.save()
    # As an engineer would: read what the target declares (the generic simulator: conditional create).
    capabilities_discover(tenant=tenant)
    for patient in ("pat-1001", "pat-1002", "pat-1003"):
        consent_create(tenant=tenant, patient_ref=patient, actor=None)
    return tenant
