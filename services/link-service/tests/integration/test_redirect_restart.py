"""10,000 redirects against link-service running as a real process, restarted twice while
requests are in flight: once gracefully (SIGTERM), once by a crash (SIGKILL). Every redirect
that was answered with a 302 must have exactly one link.clicked event with its click id, bots
flagged, nothing lost.

The bound this checks (docs/design/what-a-crash-can-lose.md): a click is committed before its 302 is
sent, so an answered redirect is never lost. A crash can leave (a) clicks that committed but
whose 302 never reached the client (the client saw an error and retried: an extra click with no
answered redirect), and (b) an outbox batch the relay published but had not yet marked,
published again after the restart: the same event id twice, which every consumer's inbox drops.
A graceful stop leaves neither."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate, new_api_key, read_topic
from referral_events import CloudEvent

pytestmark = pytest.mark.integration

TOTAL = 10_000
CONCURRENCY = 32
BOTS = (
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
)
BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


class RawConn:
    """A keep-alive HTTP/1.1 GET over asyncio streams: httpx would spend more CPU than the
    service on this 2-core machine and make the test slow, not the service."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawConn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str, user_agent: str) -> tuple[int, str]:
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {user_agent}\r\n\r\n".encode()
        )
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("closed")
        status, location, length = int(status_line.split()[1]), "", 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "location":
                location = value.strip()
            elif name.lower() == "content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status, location

    def close(self) -> None:
        self.writer.close()


async def test_ten_thousand_redirects_with_restarts_lose_nothing(
    namespace: Namespace, tmp_path: Path
) -> None:
    await migrate(namespace.database_url, "link", "link_service")
    key, entry = new_api_key("acme")
    cfg = namespace.stack_config(
        [entry], tmp_path / "logs", OUTBOX_POLL_INTERVAL_SECONDS="0.2", LOG_LEVEL="WARNING"
    )
    link = (services.SERVICES[0],)
    running = services.start(cfg, link)
    try:
        await asyncio.to_thread(services.wait_ready, running, 120)
        base = running[0].url
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            r = await api.post(
                "/v1/programs",
                json={"name": "Load", "landing_url": "https://shop.example.com/?a=1"},
            )
            pid = r.json()["id"]
            codes = []
            for i in range(20):
                r = await api.post(f"/v1/programs/{pid}/advocates", json={"customer_id": f"c{i}"})
                codes.append(r.json()["code"])

        answered: dict[str, bool] = {}  # click id -> sent as a bot
        answered_in: dict[str, int] = {}  # click id -> which process lifetime (0, 1, 2)
        lifetime = 0
        failures = 0
        next_request = 0
        phase: dict[str, int] = {}

        port = running[0].port

        async def client_loop() -> None:
            nonlocal next_request, failures
            conn: RawConn | None = None
            while len(answered) < TOTAL:
                n = next_request
                next_request += 1
                bot = n % 10 == 0
                ua = BOTS[n % 3] if bot else BROWSER
                try:
                    if conn is None:
                        conn = await RawConn.open(port)
                    status, location = await conn.get(f"/r/{codes[n % len(codes)]}", ua)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    failures += 1  # the service is stopping or down: try again
                    if conn is not None:
                        conn.close()
                    conn = None
                    await asyncio.sleep(0.2)
                    continue
                if status != 302:
                    failures += 1
                    await asyncio.sleep(0.05)
                    continue
                click_id = parse_qs(urlsplit(location).query)["click_id"][0]
                assert click_id not in answered
                answered[click_id] = bot
                answered_in[click_id] = lifetime
            if conn is not None:
                conn.close()

        async def restarter() -> None:
            nonlocal running, lifetime
            for at, how in ((TOTAL * 3 // 10, signal.SIGTERM), (TOTAL * 6 // 10, signal.SIGKILL)):
                while len(answered) < at:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                phase[how.name] = len(answered)
                timings.append(("signal " + how.name, time.monotonic() - t0))
                running[0].process.send_signal(how)
                await asyncio.to_thread(running[0].process.wait, 60)
                lifetime += 1
                running = services.start(cfg, link)
                await asyncio.to_thread(services.wait_ready, running, 120)
                timings.append(("ready again", time.monotonic() - t0))

        t0 = time.monotonic()
        timings: list[tuple[str, float]] = []
        await asyncio.wait_for(
            asyncio.gather(restarter(), *(client_loop() for _ in range(CONCURRENCY))),
            timeout=240,
        )
        assert set(phase) == {"SIGTERM", "SIGKILL"}
        timings.append(("all answered", time.monotonic() - t0))

        wanted = set(answered)
        seen: set[str] = set()
        read = 0

        def all_seen(rs: list[Any]) -> bool:
            nonlocal read
            for r in rs[read:]:
                seen.add(CloudEvent.from_json(r.value).id)
            read = len(rs)
            return wanted <= seen

        records = await read_topic(
            namespace.kafka_bootstrap_servers,
            namespace.topic_prefix + "link.clicks",
            all_seen,
            timeout=120,
        )
    finally:
        services.stop(running)

    events = [CloudEvent.from_json(r.value) for r in records]
    per_id = Counter(e.id for e in events)
    # every answered redirect has its event, flagged exactly as it was sent
    by_id = {e.id: e for e in events}
    for click_id, bot in answered.items():
        data = by_id[click_id].data
        assert data["is_bot"] is bot and data["counts"] is (not bot), data
    assert sum(1 for b in answered.values() if b) >= TOTAL // 10 - CONCURRENCY
    # No duplicates from the graceful stop or after the restarts; the crash may republish
    # the batch its relay had sent but not marked: same event, same bytes (inboxes drop it).
    duplicated = {i: n for i, n in per_id.items() if n > 1}
    assert all(answered_in.get(i, 1) == 1 for i in duplicated), duplicated
    for click_id in duplicated:
        copies = {r.value for r in records if CloudEvent.from_json(r.value).id == click_id}
        assert len(copies) == 1
    # clicks nobody received a 302 for: only requests cut off by the restarts
    unanswered = set(per_id) - wanted
    assert len(unanswered) <= failures
    print(
        f"\n{TOTAL} answered redirects, {failures} failed attempts during restarts, "
        f"{len(unanswered)} committed clicks without an answered 302, "
        f"{len(duplicated)} events republished after the crash, restarts at {phase}; "
        + ", ".join(f"{name} {t:.1f}s" for name, t in timings)
    )
