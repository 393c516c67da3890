"""CPU per operation, read from /proc, for every bench: the processes of one run found by what
they are (a pid and its descendants, the process listening on a port and its descendants, this
process and its finished children), so a figure counts the same parts whether the bench started
Kafka and Postgres itself or was handed running ones (KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL).

On a shared machine rates move with other people's load; CPU per operation barely does, and
its ratio to a reference measured in the same run (the bare ASGI app, a raw httpx POST, a raw
insert) is the figure that travels between machines."""

from __future__ import annotations

import functools
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def tree(pid: int | None) -> list[int]:
    """`pid` and all its live descendants."""
    if pid is None:
        return []
    parents = _parents()
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def listening_pid(port: int) -> int | None:
    """The process holding a listening TCP socket on `port` (any address), if this user may see
    it: the inode from /proc/net/tcp{,6}, then the process whose fd points at it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            pass
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    candidates = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    candidates.append(int(entry))
                    break
        except OSError:
            pass
    # forked servers share the socket: the oldest holder is the parent (the postmaster)
    return min(candidates) if candidates else None


def cwd_pids(directory: str) -> list[int]:
    """Processes whose working directory is `directory` (Postgres: the postmaster and every
    backend run in the data directory, whatever socket or port they listen on)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == directory:
                    found.append(int(entry))
            except OSError:
                pass
    return found


async def postgres_dir(dsn: str) -> str | None:
    """The data directory of the Postgres serving `dsn` (for `cwd_pids`); None when this role
    may not read it (then Postgres is left out of the figures, not the run)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        directory = str(await conn.fetchval("SHOW data_directory"))
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    return os.path.realpath(directory)  # noqa: ASYNC240 (no I/O worth a thread)


def kafka_pid(bootstrap: str) -> int | None:
    """The broker process listening on the bootstrap list's first port (if on this machine)."""
    return listening_pid(port_of(bootstrap, 9092))


def port_of(url: str, default: int) -> int:
    """The port of a DSN or a bootstrap list's first `host:port`."""
    first = url.split(",")[0]
    if "://" not in first:
        first = "tcp://" + first
    return urlsplit(first).port or default


class Meter:
    """CPU seconds of named parts: each a function giving its pids now (trees are re-read at
    every snapshot: Postgres forks a backend per connection). `client` is this process plus its
    waited-for children (wrk, the open-loop load generator)."""

    def __init__(
        self,
        parts: dict[str, Callable[[], list[int]]],
        client: bool = True,
        client_name: str = "load_client",
        children_only: bool = False,
    ) -> None:
        self.parts = parts
        self.client = client
        self.client_name = client_name
        self.children_only = children_only

    @classmethod
    def stack(
        cls,
        pg_dir: str | None,
        bootstrap: str | None,
        client: bool = True,
        client_name: str = "load_client",
        children_only: bool = False,
        **roots: int | None,
    ) -> Meter:
        """The trees under `roots`, plus the Postgres in `pg_dir` and the Kafka broker on
        `bootstrap` (each left out when None or not found on this machine)."""
        meter = cls.of(client, client_name, children_only, **roots)
        if pg_dir is not None:
            meter.parts["postgres"] = functools.partial(cwd_pids, pg_dir)
        broker = kafka_pid(bootstrap) if bootstrap else None
        if broker is not None:
            meter.parts["kafka"] = functools.partial(tree, broker)
        return meter

    @classmethod
    def of(
        cls,
        client: bool = True,
        client_name: str = "load_client",
        children_only: bool = False,
        **roots: int | None,
    ) -> Meter:
        """Parts whose processes are the trees under the given pids (None: not measured)."""
        parts: dict[str, Callable[[], list[int]]] = {
            name: functools.partial(tree, pid) for name, pid in roots.items() if pid is not None
        }
        return cls(parts, client, client_name, children_only)

    def snapshot(self) -> dict[str, float]:
        out = {name: sum(cpu_seconds(p) for p in pids()) for name, pids in self.parts.items()}
        if self.client:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            own = 0.0 if self.children_only else time.process_time()
            out[self.client_name] = own + children.ru_utime + children.ru_stime
        return out


def per_op(before: dict[str, float], after: dict[str, float], ops: int) -> dict[str, float]:
    """Milliseconds of CPU per operation by part, and their `total`."""
    per = {k: (after[k] - before[k]) * 1000 / max(ops, 1) for k in before}
    per["total"] = sum(per.values())
    return {k: round(v, 4) for k, v in per.items()}


def cost_fields(op: dict[str, float], reference: dict[str, float]) -> dict[str, Any]:
    """The three fields every bench's JSON line carries (issue #24), from two `per_op` results
    of the same run: the operation's CPU in all processes, the reference's, and their ratio."""
    return {
        "cpu_ms_per_op": round(op["total"], 3),
        "reference_cpu_ms_per_op": round(reference["total"], 3),
        "cpu_ratio": round(op["total"] / reference["total"], 2) if reference["total"] else None,
        "cpu_ms_per_op_by_process": op,
        "reference_cpu_ms_per_op_by_process": reference,
    }


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model and the 1-minute load average now."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "cpu_model": model,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
