"""A small HTTP/1.1 proxy that loses answers on purpose, between the sync workers and a FHIR server.

    python bench/faultproxy.py --upstream 127.0.0.1:PORT [--drop 0.15] [--fail-before 0.03]
                               [--fail-after 0.03] [--seed 1]

Prints `ready PORT` once it listens. For each POST it draws one fate (seeded, in arrival order):
- drop: forward the request, read the server's whole answer (so the server has committed), then close
  the client's connection without answering: the client cannot know whether its write landed;
- fail-after: forward it, then answer 500 instead of the server's answer (committed, reported failed);
- fail-before: answer 503 without forwarding (nothing committed);
- otherwise pass the answer through.
Other methods always pass. `GET /_proxy/stats` answers the counts of each fate as JSON (not forwarded).
Keep-alive on both sides: one upstream connection per client connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import Counter

OUTCOME = json.dumps(
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "diagnostics": "injected by bench/faultproxy"}],
    }
).encode()


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 message: its head (start line and headers, raw), headers (lower-case) and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower().decode()] = value.strip().decode()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            body += size_line + chunk
            if size == 0:
                break
        return head, headers, body
    length = int(headers.get("content-length", "0") or 0)
    return head, headers, await reader.readexactly(length) if length else b""


def response(status: int, reason: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/fhir+json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class Proxy:
    def __init__(
        self, upstream: tuple[str, int], drop: float, fail_before: float, fail_after: float, seed: int
    ):
        self.upstream = upstream
        self.shares = (("drop", drop), ("fail_after", fail_after), ("fail_before", fail_before))
        self.rng = random.Random(seed)
        self.stats: Counter = Counter()

    def fate(self, method: bytes) -> str:
        if method != b"POST":
            return "pass"
        roll, edge = self.rng.random(), 0.0
        for name, share in self.shares:
            edge += share
            if roll < edge:
                return name
        return "pass"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader = up_writer = None
        try:
            while True:
                try:
                    head, _, body = await read_message(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, path = head.split(b" ", 2)[:2]
                if path == b"/_proxy/stats":
                    writer.write(response(200, "OK", json.dumps(self.stats).encode()))
                    await writer.drain()
                    continue
                fate = self.fate(method)
                self.stats[f"{method.decode()} {fate}"] += 1
                if fate == "fail_before":
                    writer.write(response(503, "Service Unavailable", OUTCOME))
                    await writer.drain()
                    continue
                if up_writer is None:
                    up_reader, up_writer = await asyncio.open_connection(*self.upstream)
                up_writer.write(head + body)
                await up_writer.drain()
                answer_head, answer_headers, answer_body = await read_message(up_reader)
                if fate == "drop":
                    return  # the server has answered (committed); the client hears nothing
                if fate == "fail_after":
                    writer.write(response(500, "Internal Server Error", OUTCOME))
                else:
                    writer.write(answer_head + answer_body)
                await writer.drain()
                if answer_headers.get("connection", "").lower() == "close":
                    return
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()


async def serve(proxy: Proxy) -> None:
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the FHIR server")
    parser.add_argument("--drop", type=float, default=0.15)
    parser.add_argument("--fail-before", type=float, default=0.03)
    parser.add_argument("--fail-after", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    asyncio.run(serve(Proxy((host, int(port)), args.drop, args.fail_before, args.fail_after, args.seed)))


if __name__ == "__main__":
    main()
