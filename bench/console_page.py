"""Console write list latency with 10,000 writes in the ledger.

Run as a script against a prepared database (Django reads DATABASE_URL at start-up):

    DATABASE_URL=postgres://.../db python bench/console_page.py --requests 20

Renders the write list (`/writes/`) as a logged-in admin through Django's test client: the full view,
query and template work, without an HTTP socket. Pages: the first page, a deep page (page 100 of 200)
and a filter on state. Prints JSON: median milliseconds and SQL queries per page.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writeback.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

PAGES = {
    "first page": "/writes/",
    "page 100": "/writes/?page=100",
    "state=failed_terminal": "/writes/?state=failed_terminal",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    client = Client()
    client.force_login(User.objects.get(username="ada.admin"))
    results = {}
    for name, url in PAGES.items():
        response = client.get(url)  # warm-up (templates, caches)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        query_count = len(queries)  # now: each request clears Django's query log
        times = []
        for _ in range(args.requests):
            began = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - began)
        results[name] = {"median_ms": 1000 * statistics.median(times), "queries": query_count}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
