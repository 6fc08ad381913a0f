"""Start-up guards for the web server processes (`writeback.wsgi`, `writeback.asgi`).

A server that answers real requests signs sessions, CSRF tokens and password-reset links with
SECRET_KEY; with the development key anyone could forge them. So with DEBUG off the server refuses to
start on that key (or any short or placeholder key). The demo is the one exception: it runs Django's
development server on this machine against a local SQLite file, and says so (`allow_development_key`).
"""

from django.core.exceptions import ImproperlyConfigured

# The fallback in settings.py: local runs and tests only.
DEVELOPMENT_SECRET_KEY = "insecure-local-development-key-change-me-" + "x" * 20
MIN_SECRET_KEY_LENGTH = 50

_development_key_allowed = False


def secret_key_problem(key: str) -> str:
    """Why `key` must not sign anything real ('' when it may)."""
    if not key or key == DEVELOPMENT_SECRET_KEY:
        return "SECRET_KEY is unset (the development key is in use)"
    if key.startswith(("insecure", "django-insecure")):
        return "SECRET_KEY is a placeholder"
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters"
    return ""


def allow_development_key() -> None:
    """Called by `manage.py demo` only, after it checked the database is a local SQLite file."""
    global _development_key_allowed
    _development_key_allowed = True


def refuse_unsafe_start() -> None:
    """Raises ImproperlyConfigured when a server would run with DEBUG off on an unsafe SECRET_KEY."""
    from django.conf import settings

    if settings.DEBUG or _development_key_allowed:
        return
    problem = secret_key_problem(settings.SECRET_KEY)
    if problem:
        raise ImproperlyConfigured(
            f"Refusing to serve with DEBUG off: {problem}. Set SECRET_KEY (or SECRET_KEY_FILE) to a random "
            f"value of {MIN_SECRET_KEY_LENGTH}+ characters, e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(64))'`; for local development only, set DEBUG=1."
        )
