"""Drives the PyPI package `ehr-writeback` (the peer) the way its README and code show: one
`WritebackOrchestrator` with the generic FHIR R4 adapter and no auth, `process_batch` over a list of
`Observation`s. Runs with the peer's own virtualenv (see bench/peer.py), never ours.

    .bench/peer-venv/bin/python bench/peer_drive.py OBSERVATIONS.json FHIR_BASE --part 0 --parts 2 \
        --start-at EPOCH

Its idempotency and dead-letter stores ship only as Delta tables (Spark); this script gives the
orchestrator the in-memory equivalents its ports describe (a dict, a list), which is the cheapest store
it could have. Prints JSON: succeeded, skipped, dead-lettered, the wall-clock times of the start and the
end of the batch, and CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime

from ehr_writeback.adapters.generic import GenericFHIRR4Adapter, NoAuth
from ehr_writeback.core.models import EHRSystem, Observation
from ehr_writeback.core.orchestrator import WritebackOrchestrator
from ehr_writeback.core.ports import DeadLetterPort, IdempotencyPort


class MemoryIdempotency(IdempotencyPort):
    def __init__(self) -> None:
        self.done: dict[str, object] = {}

    async def has_been_processed(self, idempotency_key: str) -> bool:
        return idempotency_key in self.done

    async def mark_processed(self, result) -> None:
        self.done[result.idempotency_key] = result


class MemoryDeadLetters(DeadLetterPort):
    def __init__(self) -> None:
        self.letters: list = []

    async def send_to_dead_letter(self, dead_letter) -> None:
        self.letters.append(dead_letter)

    async def get_pending(self, limit: int = 100) -> list:
        return self.letters[:limit]

    async def mark_reprocessed(self, idempotency_key: str) -> None:
        self.letters = [d for d in self.letters if d.idempotency_key != idempotency_key]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("observations")
    parser.add_argument("base_url")
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    with open(args.observations) as f:
        rows = json.load(f)[args.part :: args.parts]
    observations = [
        Observation(**{**row, "effective_datetime": datetime.fromisoformat(row["effective_datetime"])})
        for row in rows
    ]
    orchestrator = WritebackOrchestrator(
        ehr_adapter=GenericFHIRR4Adapter(base_url=args.base_url, auth=NoAuth()),
        ehr_system=EHRSystem.GENERIC_FHIR,
        idempotency_store=MemoryIdempotency(),
        dead_letter_store=MemoryDeadLetters(),
    )
    time.sleep(max(0.0, args.start_at - time.time()))
    cpu, first = time.process_time(), time.time()
    result = asyncio.run(orchestrator.process_batch(observations))
    last, cpu = time.time(), time.process_time() - cpu
    print(
        json.dumps(
            {
                "succeeded": len(result.succeeded),
                "skipped": len(result.skipped),
                "failed": len(result.failed),
                "dead_lettered": len(result.dead_lettered),
                "first": first,
                "last": last,
                "cpu_s": cpu,
            }
        )
    )


if __name__ == "__main__":
    main()
