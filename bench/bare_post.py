"""The limit of a drain: a bare keep-alive httpx loop POSTing resources, nothing else.

    python bench/bare_post.py RESOURCES.json URL --part 0 --parts 2 --start-at EPOCH

POSTs its share of the resources (every `parts`-th, from `part`) one after another on one
`httpx.Client`, starting at the wall-clock time `start-at` (so several processes start together, after
their imports), and prints JSON: the answers by status, the wall-clock times of the first request and
the last answer, and this process's CPU seconds for the loop. No ledger, no audit, no read-back, no
retry: what the same server takes from the cheapest client this machine runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("resources")
    parser.add_argument("url", help="the type's endpoint, e.g. http://127.0.0.1:P/fhir/Observation")
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    with open(args.resources) as f:
        bodies = [json.dumps(r).encode() for r in json.load(f)[args.part :: args.parts]]
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    statuses: Counter = Counter()
    with httpx.Client(headers=headers, timeout=30) as http:
        time.sleep(max(0.0, args.start_at - time.time()))
        cpu, first = time.process_time(), time.time()
        for body in bodies:
            statuses[http.post(args.url, content=body).status_code] += 1
        last, cpu = time.time(), time.process_time() - cpu
    print(json.dumps({"statuses": dict(statuses), "first": first, "last": last, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
