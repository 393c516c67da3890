"""Experiment use cases on the edge's connection: create, start/pause/end, promote a winner
(each state change with its event), the readout and one advocate's assignment."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg

from attribution_service.analytics.handlers import own_program
from attribution_service.events import EVENTS
from attribution_service.experiments import domain, repository
from attribution_service.experiments.domain import Action, Variant
from attribution_service.experiments.schemas import (
    AssignmentOut,
    ExperimentIn,
    ExperimentOut,
    ReadoutOut,
    VariantOut,
)
from referral_events.contracts import attribution as ev
from servicekit.ids import new_id
from servicekit.pagination import PageQuery
from servicekit.problems import Conflict, InvalidInput, NotFound

_EVENTS: dict[str, type[ev.ExperimentStarted | ev.ExperimentPaused | ev.ExperimentEnded]] = {
    "running": ev.ExperimentStarted,
    "paused": ev.ExperimentPaused,
    "ended": ev.ExperimentEnded,
}


def _variants(row: asyncpg.Record) -> list[dict[str, Any]]:
    v = row["variants"]
    parsed: list[dict[str, Any]] = json.loads(v) if isinstance(v, str) else v
    return parsed


def _weights(row: asyncpg.Record) -> list[Variant]:
    return [Variant(v["key"], v["weight"]) for v in _variants(row)]


async def create(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, body: ExperimentIn
) -> ExperimentOut:
    await own_program(conn, tenant_id, program_id)
    domain.check_weights([v.weight for v in body.variants])
    row = await repository.insert(
        conn,
        id=new_id("exp"),
        tenant_id=tenant_id,
        program_id=program_id,
        name=body.name,
        kind=body.kind,
        salt=secrets.token_hex(16),
        variants=[v.model_dump() for v in body.variants],
    )
    return await _out(conn, row)


async def _get(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, experiment_id: str, lock: bool
) -> asyncpg.Record:
    await own_program(conn, tenant_id, program_id)
    row = await repository.get(conn, tenant_id, program_id, experiment_id, lock=lock)
    if row is None:
        raise NotFound(f"no experiment '{experiment_id}'", field="/experiment_id")
    return row


async def act(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    experiment_id: str,
    action: Action,
) -> ExperimentOut:
    """Start, pause or end the experiment, and emit its event."""
    row = await _get(conn, tenant_id, program_id, experiment_id, lock=True)
    updated = await _move(conn, tenant_id, row, domain.transition(row["status"], action), None)
    return await _out(conn, updated)


async def promote(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    experiment_id: str,
    variant: str,
    force: bool,
) -> ExperimentOut:
    """End the experiment with `variant` as its winner (the readout's, or any with `force`); a
    reward_rule experiment's winner becomes the program's reward rule through
    reward_rule.promoted.v1, in this transaction. The same promotion again changes nothing."""
    row = await _get(conn, tenant_id, program_id, experiment_id, lock=True)
    if variant not in {v.key for v in _weights(row)}:
        raise InvalidInput(f"'{variant}' is not a variant of this experiment", field="/variant")
    current = await _out(conn, row)
    if not domain.promotion(row["status"], row["winner"], variant, current.known_winner, force):
        return current
    updated = await _move(conn, tenant_id, row, "ended", variant)
    if updated["kind"] == "reward_rule":
        [config] = [v["config"] for v in _variants(updated) if v["key"] == variant]
        promoted = ev.RewardRulePromoted(
            experiment_id=experiment_id,
            program_id=program_id,
            variant=variant,
            rule=config,
            forced=variant != current.known_winner,
            promoted_at=datetime.now(UTC),
        )
        await EVENTS.emit(
            conn,
            promoted,
            tenant_id=tenant_id,
            key=program_id,
            event_id=f"{experiment_id}:rule_promoted",
        )
    return await _out(conn, updated)


async def _move(
    conn: asyncpg.Connection,
    tenant_id: str,
    row: asyncpg.Record,
    status: domain.Status,
    winner: str | None,
) -> asyncpg.Record:
    """Set the experiment's status (and winner) and emit its state event."""
    updated = await repository.set_status(conn, row["id"], status, winner)
    if updated is None:
        raise Conflict("the program has another experiment running or paused", field="/status")
    payload = _EVENTS[status](
        experiment_id=updated["id"],
        program_id=updated["program_id"],
        name=updated["name"],
        kind=updated["kind"],
        salt=updated["salt"],
        variants=_variants(updated),
        status=status,
        winner=updated["winner"],
        changed_at=datetime.now(UTC),
    )
    await EVENTS.emit(conn, payload, tenant_id=tenant_id, key=updated["program_id"])
    return updated


async def get(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, experiment_id: str
) -> ExperimentOut:
    return await _out(conn, await _get(conn, tenant_id, program_id, experiment_id, lock=False))


async def experiment_page(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[tuple[asyncpg.Record, ExperimentOut]]:
    """One page of the program's experiments: each row, with its readout."""
    await own_program(conn, tenant_id, program_id)
    rows = await repository.experiment_page(conn, tenant_id, program_id, page)
    return [(r, await _out(conn, r)) for r in rows]


async def assignment(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, experiment_id: str, advocate: str
) -> AssignmentOut:
    row = await _get(conn, tenant_id, program_id, experiment_id, lock=False)
    split = domain.assign(advocate, row["salt"], _weights(row))
    return AssignmentOut(
        experiment_id=experiment_id,
        advocate_id=advocate,
        variant=row["winner"] or split,
        split_variant=split,
    )


async def _out(conn: asyncpg.Connection, row: asyncpg.Record) -> ExperimentOut:
    """The experiment, with each variant's advocates and referral rate and the readout of each
    variant against the first. The variants are assigned here from the read model's advocates
    (the same `assign` every service uses)."""
    weights = _weights(row)
    advocates: Counter[str] = Counter()
    referred: Counter[str] = Counter()
    variant_of: dict[str, str] = {}
    for a in await repository.advocates(conn, row["program_id"]):
        key = variant_of[a["advocate_id"]] = domain.assign(a["advocate_id"], row["salt"], weights)
        advocates[key] += 1
        referred[key] += a["referred"]
    funnel: dict[str, dict[str, dict[str, int]]] = {v.key: {} for v in weights}
    for s in await repository.advocate_sums(conn, row["program_id"]):
        key = variant_of.get(s["advocate_id"]) or domain.assign(
            s["advocate_id"], row["salt"], weights
        )
        by_unit = funnel[key].setdefault(s["metric"], {})
        by_unit[s["unit"]] = by_unit.get(s["unit"], 0) + s["value"]
    variants = [
        VariantOut(
            **v,
            advocates=advocates[v["key"]],
            referred=referred[v["key"]],
            referral_rate=referred[v["key"]] / advocates[v["key"]] if advocates[v["key"]] else None,
            funnel=funnel[v["key"]],
        )
        for v in _variants(row)
    ]
    control = variants[0]
    readouts = [
        (
            v.key,
            domain.significance(
                (control.key, control.advocates, control.referred),
                (v.key, v.advocates, v.referred),
            ),
        )
        for v in variants[1:]
    ]
    return ExperimentOut(
        id=row["id"],
        program_id=row["program_id"],
        name=row["name"],
        kind=row["kind"],
        status=row["status"],
        winner=row["winner"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        variants=variants,
        readout=[ReadoutOut(variant=key, **r.__dict__) for key, r in readouts],
        known_winner=domain.winner(control.key, readouts),
    )
