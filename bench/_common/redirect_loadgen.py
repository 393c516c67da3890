"""Load generator for bench/redirect.py, run in its own process: minimal HTTP/1.1 keep-alive
GETs, one in flight per connection, parsed straight from asyncio protocol callbacks on uvloop
(httpx, or even asyncio streams with a task per request, cost the client 0.25-0.4 ms of CPU
per request: on a 2-core machine that is taken from the server it measures).

open loop:   --rate R --duration D   requests are scheduled at fixed times; latency counts from
             the scheduled time, so a stalled server is not hidden (no coordinated omission):
             a request due while every connection is busy waits for the next free one, and
             that wait is part of its latency
closed loop: --connections C --duration D   as fast as the server answers

Prints one JSON object: requests, responses by status, latency percentiles (ms), achieved rps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

# run as a script from this directory (bench/redirect.py starts it)
from http1 import split_response


class Client(asyncio.Protocol):
    """One keep-alive connection. `send` writes a request; when its whole response is in,
    `done(status, scheduled)` is called with the time the request was due."""

    def __init__(self, done: Callable[[Client, int, float], None], lost: Callable[[], None]):
        self._done = done
        self._lost = lost
        self._buffer = b""
        self._scheduled = 0.0
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, request: bytes, scheduled: float) -> None:
        self._scheduled = scheduled
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        response = split_response(self._buffer)
        if response is None:
            return
        status, _, used = response
        self._buffer = self._buffer[used:]
        self._done(self, status, self._scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()


def _requests(paths: list[str], user_agent: str, tokens: list[str] | None = None) -> list[bytes]:
    """One request per path; with `tokens` (bench/advocate.py), one per token, each path in
    turn, carrying `Authorization: Bearer <token>`."""
    if not tokens:
        return [
            f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {user_agent}\r\n\r\n".encode()
            for p in paths
        ]
    return [
        f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {user_agent}"
        f"\r\nAuthorization: Bearer {t}\r\n\r\n".encode()
        for i, t in enumerate(tokens)
    ]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    paths = [line.strip() for line in open(args.paths) if line.strip()]  # noqa: ASYNC230, SIM115
    tokens = (
        [line.strip() for line in open(args.bearer_file) if line.strip()]  # noqa: ASYNC230, SIM115
        if args.bearer_file
        else None
    )
    requests = _requests(paths, args.user_agent, tokens)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    slow_at: list[float] = []  # when (seconds into the run) requests over 50 ms were scheduled
    errors = 0
    # Round robin: a connection left idle for long would be closed by the server's keep-alive
    # timeout.
    idle: deque[Client] = deque()
    waiting: deque[float] = deque()  # scheduled times of requests due while all were busy
    sent = 0
    open_loop = bool(args.rate)
    finished = loop.create_future()
    start = end = 0.0

    def next_request() -> bytes:
        nonlocal sent
        sent += 1
        return requests[sent % len(requests)]

    def done(client: Client, status: int, scheduled: float) -> None:
        now = time.perf_counter()
        statuses[status] += 1
        latencies.append(now - scheduled)
        if now - scheduled > 0.05:
            slow_at.append(scheduled - start)
        if open_loop:
            if waiting:
                client.send(next_request(), waiting.popleft())
            else:
                idle.append(client)
        elif now < end:
            client.send(next_request(), now)
        else:
            idle.append(client)
        if len(idle) == args.connections and now >= end and not finished.done():
            finished.set_result(None)

    def lost() -> None:
        nonlocal errors
        errors += 1
        if not finished.done():
            finished.set_result(None)  # a server that drops connections is a failed run

    for _ in range(args.connections):
        _, client = await loop.create_connection(lambda: Client(done, lost), "127.0.0.1", args.port)
        idle.append(client)
    start = time.perf_counter()
    end = start + args.duration
    if open_loop:
        interval = 1.0 / args.rate
        i = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            due = start + i * interval
            while due <= now:
                if idle:
                    idle.popleft().send(next_request(), due)
                else:
                    waiting.append(due)
                i += 1
                due = start + i * interval
            # The loop's timers tick in whole milliseconds (uvloop would otherwise spin on a
            # shorter sleep): requests go out up to 1 ms late, and that counts in their latency.
            await asyncio.sleep(max(0.001, due - time.perf_counter()))
    else:
        while idle:
            idle.popleft().send(next_request(), start)
    if len(idle) < args.connections or waiting:
        try:
            await asyncio.wait_for(finished, timeout=30)
        except TimeoutError:
            errors += args.connections - len(idle) + len(waiting)
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
        "slow_over_50ms_at_s": [round(t, 2) for t in slow_at[:: max(1, len(slow_at) // 20)]],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", required=True, help="file with one request path per line")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0, help="open loop at this many rps")
    parser.add_argument("--user-agent", default="Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0")
    parser.add_argument("--bearer-file", help="file with one bearer token per line, rotated")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
