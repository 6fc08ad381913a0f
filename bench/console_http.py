"""Console pages over HTTP, as a signed-in admin, against a large ledger (see bench/million.py).

    DATABASE_URL=postgres://.../db python bench/console_http.py --requests 20

Starts `gunicorn writeback.wsgi:application -w 2 -k sync` on a free port (persistent database
connections, as in production), signs in as ada.admin through the login form, then requests each page
once to warm up and `--requests` times in a row over HTTP: p50 and p95 in milliseconds, and the answer's
size. Every answer must be a 200. The SQL queries per page are counted apart, in this process, through
Django's test client (the same view, the same session user), because gunicorn's workers cannot report
them. Prints JSON.

Pages: overview, write list, a state filter, a patient search (`q=pat-…` of a patient with writes),
page 200 of the write list, the approval queue, one write's detail, `/metrics` (Prometheus) and
`/api/v1/metrics`, the last two with the admin's session (DRF's session authentication).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writeback.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from common import free_port, stop, wait_for_port  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from intake import gunicorn  # noqa: E402

from writeback.models import Write  # noqa: E402

ADMIN, PASSWORD = "ada.admin", "demo"  # the demo's people (bench/million.py seed)


def pages() -> dict[str, str]:
    """The pages to measure; the write and the patient are picked from the middle of the ledger."""
    middle = Write.objects.order_by("-id").values_list("id", flat=True)[Write.objects.count() // 2]
    write = Write.objects.get(pk=middle)
    # Page 200 of 50 rows, as the keyset list addresses it: after the 9,950th newest write.
    deep = Write.objects.order_by("-id").values_list("id", flat=True)[199 * 50 - 1]
    return {
        "overview": "/",
        "write list": "/writes/",
        "state filter": "/writes/?state=failed_terminal",
        "patient search": f"/writes/?q={write.patient_ref}",
        "page 200": f"/writes/?after={deep}",
        "approvals": "/approvals/",
        "write detail": f"/writes/{write.uid}/",
        "/metrics": "/metrics",
        "/api/v1/metrics": "/api/v1/metrics",
    }


def query_counts(urls: dict[str, str]) -> dict[str, int]:
    client = Client()
    client.force_login(User.objects.get(username=ADMIN))
    counts = {}
    for name, url in urls.items():
        client.get(url)  # warm-up: caches that a running server already holds
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code} through the test client")
        counts[name] = len(queries)
    return counts


def sign_in(http: httpx.Client) -> None:
    form = http.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    answer = http.post(
        "/login/",
        data={"username": ADMIN, "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{http.base_url}login/"},
    )
    if answer.status_code != 302:
        raise SystemExit(f"sign-in answered {answer.status_code}")


def timed(http: httpx.Client, urls: dict[str, str], requests: int) -> dict[str, dict]:
    results = {}
    for name, url in urls.items():
        first = http.get(url)
        if first.status_code != 200:
            raise SystemExit(f"{url} answered {first.status_code} over HTTP")
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            response = http.get(url)
            times.append(1000 * (time.perf_counter() - began))
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code} over HTTP")
        cuts = statistics.quantiles(times, n=20, method="inclusive")
        results[name] = {
            "url": url,
            "p50_ms": statistics.median(times),
            "p95_ms": cuts[18],
            "max_ms": max(times),
            "bytes": len(first.content),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    urls = pages()
    counts = query_counts(urls)
    connection.close()
    port = free_port()
    server, server_log = gunicorn(os.environ["DATABASE_URL"], port, conn_max_age=600)
    try:
        wait_for_port(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            sign_in(http)
            results = timed(http, urls, args.requests)
    finally:
        stop(server)
    Path(server_log).unlink(missing_ok=True)
    for name in results:
        results[name]["queries"] = counts[name]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
