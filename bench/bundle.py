"""What sending an event's writes as one transaction Bundle would gain, measured at the limit.

    python bench/bundle.py [--writes 1200] [--per-bundle 6] [--runs 3]

Against a fresh sekmet-fhir server per loop (bench/sekmet_server.py), one bare keep-alive httpx client:

- single: each Observation POSTed on its own as a conditional create (`If-None-Exist: identifier=...`),
  the request our worker makes for a create where the target declares conditional create;
- bundle: the same Observations, `--per-bundle` to a `transaction` Bundle (a 6-measurement vitals event
  is six writes), each entry a POST with `ifNoneExist`.

Each loop must leave exactly one Observation per resource. Then the property exactly-once rests on:
the first bundles and the first single POSTs are sent again, as a worker does after an answer lost
after commit, and the server must store nothing new. Prints the medians (writes/s, client and server
CPU per write) and what the resends stored, as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import httpx
from common import cpu_seconds
from sekmet_server import Sekmet

SYSTEM = "urn:fhir-writeback:write-id"
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
RESENT = 10


def observations(n: int) -> list[dict]:
    """Vitals Observations as the mapping makes them (one patient per six), each with our identifier."""
    return [
        {
            "resourceType": "Observation",
            "identifier": [{"system": SYSTEM, "value": str(uuid.uuid4())}],
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/pat-{1000 + i // 6}"},
            "effectiveDateTime": "2026-11-20T14:03:00-05:00",
            "valueQuantity": {
                "value": 60 + i % 40,
                "unit": "beats/minute",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
        for i in range(n)
    ]


def _condition(resource: dict) -> str:
    return f"identifier={SYSTEM}|{resource['identifier'][0]['value']}"


def _bundle(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": r,
                "request": {"method": "POST", "url": "Observation", "ifNoneExist": _condition(r)},
            }
            for r in resources
        ],
    }


def _single(http: httpx.Client, resource: dict) -> None:
    r = http.post("/Observation", json=resource, headers={"If-None-Exist": _condition(resource)})
    if r.status_code not in (200, 201):
        raise RuntimeError(f"conditional create answered {r.status_code}: {r.text[:300]}")


def _transaction(http: httpx.Client, resources: list[dict]) -> None:
    r = http.post("", json=_bundle(resources))
    if r.status_code != 200:
        raise RuntimeError(f"transaction answered {r.status_code}: {r.text[:300]}")
    statuses = [e["response"]["status"] for e in r.json().get("entry", [])]
    if len(statuses) != len(resources) or not all(s.startswith(("200", "201")) for s in statuses):
        raise RuntimeError(f"transaction entries answered {statuses}")


def loop(kind: str, resources: list[dict], per_bundle: int) -> dict:
    """One loop into a fresh server; then the resends. Fails unless one Observation per resource."""
    groups = [resources[i : i + per_bundle] for i in range(0, len(resources), per_bundle)]
    with Sekmet() as server, httpx.Client(base_url=server.base, headers=HEADERS, timeout=60) as http:
        server_before, cpu, began = cpu_seconds(server.proc.pid), time.process_time(), time.monotonic()
        if kind == "bundle":
            for group in groups:
                _transaction(http, group)
        else:
            for resource in resources:
                _single(http, resource)
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
        server_cpu = cpu_seconds(server.proc.pid) - server_before
        stored = server.observations(SYSTEM)
        if stored.total != len(resources) or stored.duplicates:
            raise RuntimeError(f"{kind}: the server holds {stored.total} for {len(resources)} resources")
        # Sent again, as after an answer lost after the server committed.
        if kind == "bundle":
            for group in groups[:RESENT]:
                _transaction(http, group)
            resent = sum(len(g) for g in groups[:RESENT])
        else:
            for resource in resources[:RESENT]:
                _single(http, resource)
            resent = RESENT
        after = server.observations(SYSTEM)
    return {
        "writes_per_s": len(resources) / wall,
        "client_cpu_ms": 1000 * cpu / len(resources),
        "server_cpu_ms": 1000 * server_cpu / len(resources),
        "resent": resent,
        "stored_by_resends": after.total - stored.total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=1200)
    parser.add_argument("--per-bundle", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"single": [], "bundle": []}
    for _ in range(args.runs):
        for kind in runs:  # alternated, so a change in the machine's load hits both alike
            runs[kind].append(loop(kind, observations(args.writes), args.per_bundle))
    out = {
        kind: {
            key: statistics.median(r[key] for r in rs)
            for key in ("writes_per_s", "client_cpu_ms", "server_cpu_ms", "stored_by_resends")
        }
        | {"runs": [round(r["writes_per_s"], 1) for r in rs], "resent": rs[0]["resent"]}
        for kind, rs in runs.items()
    }
    out["bundle_over_single"] = out["bundle"]["writes_per_s"] / out["single"]["writes_per_s"]
    out["settings"] = {"writes": args.writes, "per_bundle": args.per_bundle, "runs": args.runs}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
