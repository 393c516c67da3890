"""The two sets of database errors every service reads (referral_events.database_errors): which
ones mean the database away (retried without end, 503) and which the work's own (counted)."""

from __future__ import annotations

import asyncpg
import pytest

from referral_events.database_errors import DB_ERRORS, INFRASTRUCTURE_ERRORS

AWAY = [
    OSError("connection refused"),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("closed"),
    asyncpg.exceptions.CannotConnectNowError("starting up"),
    asyncpg.exceptions.TooManyConnectionsError("too many"),
    asyncpg.exceptions.DiskFullError("no space left"),
    asyncpg.exceptions.OutOfMemoryError("out of memory"),
    asyncpg.exceptions.AdminShutdownError("terminating"),
    asyncpg.exceptions.ConnectionFailureError("lost"),
    asyncpg.exceptions.InternalClientError("cannot switch to state 12"),
]
OWN = [
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.exceptions.DataError("bad value"),
    asyncpg.exceptions.ProtocolViolationError("our bug"),
    asyncpg.exceptions.QueryCanceledError("statement timeout"),
]


@pytest.mark.parametrize("exc", AWAY, ids=lambda e: type(e).__name__)
def test_the_database_away_is_infrastructure_and_a_database_error(exc: Exception) -> None:
    assert isinstance(exc, INFRASTRUCTURE_ERRORS)
    assert isinstance(exc, DB_ERRORS)


@pytest.mark.parametrize("exc", OWN, ids=lambda e: type(e).__name__)
def test_the_work_s_own_errors_are_database_errors_only(exc: Exception) -> None:
    assert not isinstance(exc, INFRASTRUCTURE_ERRORS)
    assert isinstance(exc, DB_ERRORS)
