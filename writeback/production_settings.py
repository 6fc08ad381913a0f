"""Production settings: `DJANGO_SETTINGS_MODULE=writeback.production_settings`. Passes `check --deploy`."""

from django.core.exceptions import ImproperlyConfigured

from writeback.audit_keys import production_problems
from writeback.deploy import MIN_SECRET_KEY_LENGTH, secret_key_problem
from writeback.settings import *  # noqa: F403
from writeback.settings import (
    BASE_DIR,
    WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS,
    WRITEBACK_AUDIT_OLD_KEYS,
    WRITEBACK_DEV_AUDIT_KEY,
    WRITEBACK_DEV_AUDIT_SIGNING_KEY,
    env,
    env_bool,
    env_int,
    env_secret,
)

DEBUG = False
SECRET_KEY = env_secret("SECRET_KEY")
if secret_key_problem(SECRET_KEY):
    raise ImproperlyConfigured(
        f"{secret_key_problem(SECRET_KEY)}: SECRET_KEY (or SECRET_KEY_FILE) must be set to a random value "
        f"of {MIN_SECRET_KEY_LENGTH}+ characters"
    )
# No fallbacks: an audit trail keyed with the published development key proves nothing, and a signing
# key is only configured on the host that exports chain heads.
WRITEBACK_AUDIT_KEY = env_secret("WRITEBACK_AUDIT_KEY")
WRITEBACK_AUDIT_SIGNING_KEY = env_secret("WRITEBACK_AUDIT_SIGNING_KEY")
_audit_key_problems = production_problems(
    audit_key=WRITEBACK_AUDIT_KEY,
    old_keys=WRITEBACK_AUDIT_OLD_KEYS,
    signing=WRITEBACK_AUDIT_SIGNING_KEY,
    public_keys=WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS,
    development_key=WRITEBACK_DEV_AUDIT_KEY,
    development_signing_key=WRITEBACK_DEV_AUDIT_SIGNING_KEY,
)
if _audit_key_problems:
    raise ImproperlyConfigured("; ".join(_audit_key_problems))

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is opt-in per deployment (SECURE_HSTS_PRELOAD): it cannot be undone quickly.
    "security.W021",
]
ADMINS = [("ops", env("ADMIN_EMAIL", "ops@localhost"))]
WHITENOISE_USE_FINDERS = False
STATIC_ROOT = BASE_DIR / "staticfiles"
