"""Settings for the write-back system. Everything that differs per deployment comes from the environment."""

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.utils.csp import CSP
from pythonjsonlogger.core import RESERVED_ATTRS

from writeback.deploy import DEVELOPMENT_SECRET_KEY as _development_key

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    return env(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


def env_secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    path = env(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return env(name, default)


DEBUG = env_bool("DEBUG", False)
# The fallback key only serves local runs and tests: production_settings refuses to load without a real
# SECRET_KEY, and writeback.wsgi / writeback.asgi refuse to serve on it with DEBUG off.
SECRET_KEY = env_secret("SECRET_KEY", _development_key)
ALLOWED_HOSTS = [
    h.strip() for h in env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_filters",
    "django_htmx",
    "simple_history",
    "guardian",
    "axes",
    "writeback",
    "adapters",
    "console",
]

MIDDLEWARE = [
    # Outermost: a view that fails on an unreachable database answers 503 with Retry-After.
    "writeback.middleware_db.DatabaseUnavailableMiddleware",
    # First: every log line of a request carries its request and correlation ids (writeback/logcontext.py).
    "writeback.logcontext.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads the session, the user or the body (writeback/api/body.py).
    "writeback.api.body.RequestGateMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "console.middleware.DeactivatedSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "console.middleware.IdleSessionTimeoutMiddleware",
    "console.middleware.UserTimezoneMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "writeback.urls"
WSGI_APPLICATION = "writeback.wsgi.application"
ASGI_APPLICATION = "writeback.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.operator",
            ],
        },
    },
]

# SQLite file by default; PostgreSQL (or any URL dj-database-url reads) when DATABASE_URL says so.
# Persistent connections: a new PostgreSQL connection costs ~9 ms, which cuts API throughput 7x.
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Our SQLite backend keeps the append-only triggers intact across `flush`; IMMEDIATE transactions
    # take the write lock up front so concurrent writers queue instead of failing with "database is locked".
    DATABASES["default"]["ENGINE"] = "writeback.db.sqlite3"
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file, not shared-cache memory: threads then get SQLite's real locking (busy timeout,
    # WAL), which the concurrency tests rely on. One file per process keeps parallel runs apart.
    test_file = Path(tempfile.gettempdir()) / f"writeback-test-{os.getpid()}.sqlite3"
    DATABASES["default"]["TEST"] = {"NAME": env("SQLITE_TEST_NAME", "") or str(test_file)}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Our PostgreSQL backend lets `flush` (tests, manage.py flush) past the append-only TRUNCATE triggers.
    DATABASES["default"]["ENGINE"] = "writeback.db.postgresql"
    # No JIT compilation: every query here is short, and JIT only pays for long analytical ones. Its
    # threshold is a cost estimate, which a LIMIT over a selective filter inflates: the overview's
    # latency sample (5,000 rows, ~10 ms to run) spent ~20 ms compiling itself on every request.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = f"{options.get('options', '')} -c jit=off".strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username + address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous object permissions

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "console-login"
LOGIN_REDIRECT_URL = "console-overview"
LOGOUT_REDIRECT_URL = "console-login"

# Sign-in throttling (django-axes): after this many failed sign-ins for one username from one address,
# that pair is locked out for the cool-off time (a success resets the count). Lockouts are audited.
AXES_FAILURE_LIMIT = env_int("WRITEBACK_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("WRITEBACK_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "console.views.signin.locked_out"
AXES_VERBOSE = False  # lockouts are in the audit trail; no banner on every manage.py command
# Behind a reverse proxy, the client address is the proxy's unless told how many proxies to trust.
AXES_IPWARE_PROXY_COUNT = env_int("WRITEBACK_TRUSTED_PROXY_COUNT", 0) or None
if AXES_IPWARE_PROXY_COUNT:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")

# Sessions end after this many minutes without a request of the person's own (background refreshes do
# not count: console.middleware.IdleSessionTimeoutMiddleware), and at most this many hours after sign-in.
WRITEBACK_SESSION_IDLE_MINUTES = env_int("WRITEBACK_SESSION_IDLE_MINUTES", 30)
SESSION_COOKIE_AGE = env_int("WRITEBACK_SESSION_MAX_HOURS", 12) * 3600

# Content Security Policy on every page: scripts, styles and everything else only from this origin, no
# inline script, no inline style, no eval (htmx is configured accordingly in templates/base.html).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

STATICFILES_DIRS = [BASE_DIR / "static"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "writeback.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Size, depth and character checks on every JSON body the API reads (writeback/api/body.py).
    "DEFAULT_PARSER_CLASSES": [
        "writeback.api.body.GuardedJSONParser",
        "writeback.api.body.GuardedFhirJSONParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "writeback.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "FHIR write-back API",
    "DESCRIPTION": "Business events in, safe FHIR writes out: intake, ledger, approvals, compensation.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema maps every endpoint and field: served to signed-in people and API tokens only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# One JSON object per line on stderr (python-json-logger), whatever DEBUG says: time, level, logger,
# message, and the context of the line (correlation id, request id, tenant, write id, event type; see
# writeback/logcontext.py and docs/operations.md, "Logs"). LOG_FORMAT=plain gives the same fields as text.
LOG_FORMAT = env("LOG_FORMAT", "json")
_LOG_FIELDS = "%(correlation_id)s %(request_id)s %(tenant)s %(write_id)s %(event_type)s"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "writeback.logcontext.ContextFilter"},
        "no_query_strings": {"()": "writeback.logcontext.NoQueryStrings"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": f"%(levelname)s %(name)s %(message)s {_LOG_FIELDS}",
            "rename_fields": {"levelname": "level", "name": "logger"},
            # Django passes the request object along (its repr shows the query string): not printed.
            "reserved_attrs": [*RESERVED_ATTRS, "request", "server_time"],
            "timestamp": "time",
        },
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s "
            "[correlation_id=%(correlation_id)s request_id=%(request_id)s tenant=%(tenant)s "
            "write_id=%(write_id)s event_type=%(event_type)s]"
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if LOG_FORMAT == "plain" else "json",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # The development server's access log (the demo): JSON too, and without query strings.
        "django.server": {
            "handlers": ["console"],
            "level": "INFO",
            "propagate": False,
            "filters": ["no_query_strings"],
        },
    },
}

# --- The write-back domain -------------------------------------------------------------------------

# The request gate (writeback/api/body.py, docs/security.md). Largest accepted bodies, per endpoint kind;
# bigger requests get 413 before any parsing: an event; any other API write (approve, reject, replay,
# compensate, resolve, abort, event replay, consents); a console or admin form (form-encoding inflates
# the JSON a replay or correction form carries up to threefold).
WRITEBACK_MAX_EVENT_BYTES = env_int("WRITEBACK_MAX_EVENT_BYTES", 256 * 1024)
WRITEBACK_MAX_ACTION_BYTES = env_int("WRITEBACK_MAX_ACTION_BYTES", 64 * 1024)
WRITEBACK_MAX_FORM_BYTES = env_int("WRITEBACK_MAX_FORM_BYTES", 256 * 1024)
# Deepest JSON accepted (arrays and objects); our deepest event or FHIR resource nests about 8.
WRITEBACK_MAX_JSON_DEPTH = env_int("WRITEBACK_MAX_JSON_DEPTH", 32)
# Longest string accepted in an action's body or a form field; in an event, only its body limit bounds a
# string (a note's text may fill it).
WRITEBACK_MAX_STRING_CHARS = env_int("WRITEBACK_MAX_STRING_CHARS", 64 * 1024)
# Django's own limit only guards bodies it reads itself; it must not be the smaller one.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(
    WRITEBACK_MAX_EVENT_BYTES * 2, WRITEBACK_MAX_FORM_BYTES * 2, WRITEBACK_MAX_ACTION_BYTES * 2, 2_621_440
)
# Every resource we create carries identifier {system: this, value: <write id>}: the key for check-by-read.
WRITEBACK_IDENTIFIER_SYSTEM = env("WRITEBACK_IDENTIFIER_SYSTEM", "urn:fhir-writeback:write-id")
# How far in the future an event's clinical time may lie before it is refused (clock skew allowance).
WRITEBACK_FUTURE_TOLERANCE_SECONDS = env_int("WRITEBACK_FUTURE_TOLERANCE_SECONDS", 300)
# Approvals are bound to a payload hash and lapse after this many hours.
WRITEBACK_APPROVAL_TTL_HOURS = env_int("WRITEBACK_APPROVAL_TTL_HOURS", 24)
# A worker's claim on a write lapses after this long unless renewed. A live worker renews the leases of
# its in-flight writes every third of this, however slow the EHR; a killed worker's writes become
# claimable (and are checked by read before any resend) once it lapses: shorter means faster recovery.
WRITEBACK_LEASE_SECONDS = env_int("WRITEBACK_LEASE_SECONDS", 60)
# Connect and read timeouts toward EHRs, in seconds.
WRITEBACK_HTTP_CONNECT_TIMEOUT = float(env("WRITEBACK_HTTP_CONNECT_TIMEOUT", "5"))
WRITEBACK_HTTP_READ_TIMEOUT = float(env("WRITEBACK_HTTP_READ_TIMEOUT", "20"))
# Attempt caps per contract risk level: riskier writes go to a person sooner.
WRITEBACK_MAX_ATTEMPTS = {"low": 10, "medium": 8, "high": 5, "very_high": 3}
# Keys whose values the audit trail stores only as SHA-256 hashes (PHI and free text).
WRITEBACK_AUDIT_SENSITIVE_KEYS = [
    k.strip()
    for k in env(
        "WRITEBACK_AUDIT_SENSITIVE_KEYS",
        "patient_identifier,identifier,name,birth_date,telecom,address,text,note,rationale_text,payload,"
        "ours,theirs,base,body,artifact,dosage",
    ).split(",")
    if k.strip()
]
# The audit chain is keyed (HMAC-SHA256), so nobody without the key can rewrite it and have it verify.
# Keys come only from the environment, never from the database: WRITEBACK_AUDIT_KEY (or _FILE) signs new
# entries; WRITEBACK_AUDIT_OLD_KEYS (or _FILE; comma-separated) are retired keys, kept to verify the
# entries written before a rotation. The fallback is a published development key (entries written with
# it prove nothing): production_settings refuses it. See docs/security.md, "The audit trail".
WRITEBACK_DEV_AUDIT_KEY = "insecure-development-audit-key-published-in-the-source-code"
WRITEBACK_AUDIT_KEY = env_secret("WRITEBACK_AUDIT_KEY", WRITEBACK_DEV_AUDIT_KEY)
WRITEBACK_AUDIT_OLD_KEYS = [k.strip() for k in env_secret("WRITEBACK_AUDIT_OLD_KEYS").split(",") if k.strip()]
# Entries written before the chain was keyed verify only as its first entries. Pinning their number here
# (verify_audit_chain prints it) makes any unkeyed entry after it a break, even without an exported head.
WRITEBACK_AUDIT_LEGACY_MAX_SEQ = (
    int(env("WRITEBACK_AUDIT_LEGACY_MAX_SEQ")) if env("WRITEBACK_AUDIT_LEGACY_MAX_SEQ") else None
)
# Exported chain heads (export_audit_head) are signed with this Ed25519 key (base64 of the 32-byte private
# key, or a PEM file via _FILE), held where the export runs; verify_audit_chain --expect-head trusts its
# public key and WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS (comma-separated base64: earlier signing keys, or the
# keys of an exporter elsewhere). The fallback is a published development key.
WRITEBACK_DEV_AUDIT_SIGNING_KEY = "Qm9MxRoH6RBg2VID6wA9Raosyqp/efzEYkPszk/I7Zo="
WRITEBACK_AUDIT_SIGNING_KEY = env_secret("WRITEBACK_AUDIT_SIGNING_KEY", WRITEBACK_DEV_AUDIT_SIGNING_KEY)
WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS = [
    k.strip() for k in env_secret("WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS").split(",") if k.strip()
]
# Retry backoff: base * 2^(attempt-1) seconds with jitter, capped; Retry-After always honoured.
WRITEBACK_BACKOFF_BASE_SECONDS = float(env("WRITEBACK_BACKOFF_BASE_SECONDS", "2"))
WRITEBACK_BACKOFF_CAP_SECONDS = float(env("WRITEBACK_BACKOFF_CAP_SECONDS", "900"))
# Worker threads per process, and writes claimed per claim query (batched claims are ~2.5x cheaper).
WRITEBACK_WORKER_CONCURRENCY = env_int("WRITEBACK_WORKER_CONCURRENCY", 8)
WRITEBACK_IDLE_SLEEP_SECONDS = float(env("WRITEBACK_IDLE_SLEEP_SECONDS", "1.0"))
# Reconciliation sweeps: resources per search page (`_count`), and at most this many pages per type.
WRITEBACK_RECONCILE_PAGE_SIZE = env_int("WRITEBACK_RECONCILE_PAGE_SIZE", 100)
WRITEBACK_RECONCILE_MAX_PAGES = env_int("WRITEBACK_RECONCILE_MAX_PAGES", 10_000)
# Restore detection (docs/recovery.md): a file outside the database where workers keep the audit chain
# head they last saw. A worker that starts on a database behind it marks open writes verify-before-send.
# Empty: off. Keep it on storage that a database restore does not roll back.
WRITEBACK_GENERATION_FILE = env("WRITEBACK_GENERATION_FILE", "")
# Database outages (restart, failover): a worker retries after base * 2^(n-1) seconds with jitter,
# capped, and never exits; the web process answers 503 with this Retry-After meanwhile.
WRITEBACK_DB_RECONNECT_BASE_SECONDS = float(env("WRITEBACK_DB_RECONNECT_BASE_SECONDS", "0.5"))
WRITEBACK_DB_RECONNECT_CAP_SECONDS = float(env("WRITEBACK_DB_RECONNECT_CAP_SECONDS", "15"))
WRITEBACK_DB_RETRY_AFTER_SECONDS = env_int("WRITEBACK_DB_RETRY_AFTER_SECONDS", 5)
# Live EHR reads from the console (chart comparison, plan prediction) per person: a burst of this many,
# refilled at this many a minute (0: no limit).
WRITEBACK_CONSOLE_EHR_READS_PER_MINUTE = env_int("WRITEBACK_CONSOLE_EHR_READS_PER_MINUTE", 20)
# Serve static files straight from static/ (no collectstatic needed for the demo); production collects.
WHITENOISE_USE_FINDERS = True
# Alerts. The console's absolute address, for the link each delivered alert carries.
WRITEBACK_CONSOLE_URL = env("WRITEBACK_CONSOLE_URL", "http://localhost:8000").rstrip("/")
# Webhook signing secrets are stored encrypted with this key (any string; or _FILE). Without it they are
# encrypted with a key derived from SECRET_KEY, so rotating SECRET_KEY then means re-adding the routes.
WRITEBACK_ALERT_ROUTE_KEY = env_secret("WRITEBACK_ALERT_ROUTE_KEY")
# Minutes a page alert may stay unacknowledged before it goes to the escalation routes (a tenant's
# settings["alerts"]["escalation_minutes"] overrides it).
WRITEBACK_ALERT_ESCALATION_MINUTES = env_int("WRITEBACK_ALERT_ESCALATION_MINUTES", 15)
WRITEBACK_ALERT_FROM_EMAIL = env("WRITEBACK_ALERT_FROM_EMAIL", "writeback-alerts@localhost")
# Threshold alerts are evaluated by each worker's housekeeping at most this often.
WRITEBACK_ALERT_EVALUATE_SECONDS = env_int("WRITEBACK_ALERT_EVALUATE_SECONDS", 15)
# Outgoing mail (alert routes of kind email): SMTP by default; any Django mail backend by dotted path.
_EMAIL_BACKEND = env("WRITEBACK_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
MAILERS = {
    "default": {
        "BACKEND": _EMAIL_BACKEND,
        **(
            {
                "OPTIONS": {
                    "host": env("WRITEBACK_EMAIL_HOST", "localhost"),
                    "port": env_int("WRITEBACK_EMAIL_PORT", 25),
                    "use_tls": env_bool("WRITEBACK_EMAIL_TLS", False),
                    "timeout": 10,
                }
            }
            if _EMAIL_BACKEND.endswith("smtp.EmailBackend")
            else {}
        ),
    }
}
