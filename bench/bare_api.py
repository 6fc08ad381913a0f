"""The limit of intake, measured in the same run: a bare Django + DRF insert (limits.md 4a), no product.

    DATABASE_URL=postgres://... gunicorn --chdir bench bare_api:application -w 2 -k sync

One view, `POST /api/events`: validates a 4-field serializer (two CharFields, a DateTimeField and a
JSONField), inserts one row into `bench_bare_event` (made by bench/intake.py before the server starts)
and answers 201 with its id. DEBUG off, SecurityMiddleware and CommonMiddleware, no authentication,
JSON only, persistent database connections (CONN_MAX_AGE=600): what limits.md measured at 925 req/s.
The insert is one SQL statement (limits.md used the ORM's `create`), so this limit is if anything a
little higher than that one.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlparse

import django
from django.conf import settings

_db = urlparse(os.environ["DATABASE_URL"])
settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - a local benchmark server, no sessions
    USE_TZ=True,
    INSTALLED_APPS=["rest_framework"],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _db.path.lstrip("/"),
            "USER": _db.username or "",
            "PASSWORD": _db.password or "",
            "HOST": _db.hostname or "",
            "PORT": _db.port or 5432,
            "CONN_MAX_AGE": 600,
        }
    },
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "UNAUTHENTICATED_USER": None,
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework import serializers  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

TABLE = "bench_bare_event"  # made by bench/intake.py (BARE_CREATE) before the server starts


class EventIn(serializers.Serializer):
    key = serializers.CharField(max_length=200)
    type = serializers.CharField(max_length=64)
    occurred_at = serializers.DateTimeField()
    data = serializers.JSONField()


class Events(APIView):
    def post(self, request: Request) -> Response:
        event = EventIn(data=request.data)
        event.is_valid(raise_exception=True)
        v = event.validated_data
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} (key, type, occurred_at, data) VALUES (%s, %s, %s, %s) RETURNING id",  # noqa: S608
                [v["key"], v["type"], v["occurred_at"], json.dumps(v["data"])],
            )
            new_id = cursor.fetchone()[0]
        return Response({"id": new_id}, status=201)


urlpatterns = [path("api/events", Events.as_view())]
application = get_wsgi_application()
