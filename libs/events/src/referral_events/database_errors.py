"""What the database (or the way to it) may raise, in two sets written once: every service's
background loops, relay, consumers, front doors and 503 handlers read these.

- DB_ERRORS: anything from Postgres or the connection to it. A background loop that meets one
  logs it and tries again later instead of ending (a relay or worker task that ended waited
  for its supervisor's restart).
- INFRASTRUCTURE_ERRORS: the database away, overloaded or going down, as opposed to an error
  the work itself causes (a constraint, a bad value: our bug or bad input). A consumer retries
  these without counting them towards dead-lettering the event, a request answers 503, a bulk
  enrollment chunk is retried without counting against its job."""

from __future__ import annotations

import asyncpg

INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # TimeoutError too (a pool acquire or a connect that timed out)
    asyncpg.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    # Class 53: too many connections, disk full, out of memory: the server's resources, not
    # the event's.
    asyncpg.exceptions.InsufficientResourcesError,
    # Postgres stopping (or crashing) ends the statements in flight with these: the database
    # going away, not the event, so they must not count towards dead-lettering it.
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.IdleSessionTimeoutError,
    # The connection lost or refused (SQLSTATE class 08; not 08P01, a protocol violation: that
    # would be our own bug, not the database away).
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.ClientCannotConnectError,
    asyncpg.exceptions.ConnectionRejectionError,
    asyncpg.exceptions.TransactionResolutionUnknownError,
    # A pooled connection left mid-operation by a server that went away ("cannot switch to
    # state ...; another operation is in progress"), seen once while Postgres shut down.
    asyncpg.exceptions.InternalClientError,
)

DB_ERRORS: tuple[type[Exception], ...] = (
    *INFRASTRUCTURE_ERRORS,
    asyncpg.PostgresError,
)
