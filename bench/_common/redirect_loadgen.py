"""Load generator for bench/redirect.py, run in its own process: minimal HTTP/1.1 keep-alive
GETs over asyncio streams (httpx would measure itself on a 2-core machine).

open loop:   --rate R --duration D   requests are scheduled at fixed times; latency counts from
             the scheduled time, so a stalled server is not hidden (no coordinated omission)
closed loop: --connections C --duration D   as fast as the server answers

Prints one JSON object: requests, responses by status, latency percentiles (ms), achieved rps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, request: bytes) -> int:
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status


def _requests(paths: list[str], user_agent: str) -> list[bytes]:
    return [
        f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {user_agent}\r\n\r\n".encode()
        for p in paths
    ]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    paths = [line.strip() for line in open(args.paths) if line.strip()]  # noqa: ASYNC230, SIM115
    requests = _requests(paths, args.user_agent)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    errors = 0
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(args.connections):
        pool.put_nowait(await Conn.open(args.port))
    start = time.perf_counter()
    end = start + args.duration

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await conn.get(requests[i % len(requests)])
            statuses[status] += 1
            latencies.append(time.perf_counter() - scheduled)
            pool.put_nowait(conn)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            pool.put_nowait(await Conn.open(args.port))

    if args.rate:
        interval = 1.0 / args.rate
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            due = start + i * interval
            while due <= now:
                t = asyncio.create_task(one(i, due))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
                due = start + i * interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    else:

        async def loop(worker: int) -> None:
            i = worker
            while time.perf_counter() < end:
                await one(i, time.perf_counter())
                i += args.connections

        await asyncio.gather(*(loop(w) for w in range(args.connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies) + errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round((latencies[-1] if latencies else 0) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", required=True, help="file with one request path per line")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0, help="open loop at this many rps")
    parser.add_argument("--user-agent", default="Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
