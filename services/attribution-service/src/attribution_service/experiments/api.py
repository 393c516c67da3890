"""HTTP routes of A/B experiments of programs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from attribution_service.experiments import handlers
from attribution_service.experiments.schemas import (
    AssignmentOut,
    ExperimentIn,
    ExperimentOut,
    PromoteIn,
)
from attribution_service.web import Rt
from servicekit.auth import Principal, requires
from servicekit.pagination import Page, PageParams

router = APIRouter(tags=["experiments"])

Reader = Annotated[Principal, requires("programs:read")]
Writer = Annotated[Principal, requires("programs:write")]
BASE = "/v1/programs/{program_id}/experiments"


@router.post(BASE, response_model=ExperimentOut, status_code=201)
async def create_experiment(
    program_id: str, body: ExperimentIn, who: Writer, rt: Rt
) -> ExperimentOut:
    async with rt.transaction() as conn:
        return await handlers.create(conn, who.tenant_id, program_id, body)


@router.get(BASE, response_model=Page[ExperimentOut])
async def list_experiments(
    program_id: str, who: Reader, rt: Rt, page: PageParams
) -> Page[ExperimentOut]:
    """The program's experiments, oldest first, each with its readout."""
    async with rt.transaction() as conn:
        items = await handlers.experiment_page(conn, who.tenant_id, program_id, page)
    return page.answer(items, lambda e: e[1], record=lambda e: e[0])


@router.get(BASE + "/{experiment_id}", response_model=ExperimentOut)
async def get_experiment(program_id: str, experiment_id: str, who: Reader, rt: Rt) -> ExperimentOut:
    async with rt.transaction() as conn:
        return await handlers.get(conn, who.tenant_id, program_id, experiment_id)


@router.post(BASE + "/{experiment_id}/start", response_model=ExperimentOut)
async def start_experiment(
    program_id: str, experiment_id: str, who: Writer, rt: Rt
) -> ExperimentOut:
    async with rt.transaction() as conn:
        return await handlers.act(conn, who.tenant_id, program_id, experiment_id, "start")


@router.post(BASE + "/{experiment_id}/pause", response_model=ExperimentOut)
async def pause_experiment(
    program_id: str, experiment_id: str, who: Writer, rt: Rt
) -> ExperimentOut:
    async with rt.transaction() as conn:
        return await handlers.act(conn, who.tenant_id, program_id, experiment_id, "pause")


@router.post(BASE + "/{experiment_id}/end", response_model=ExperimentOut)
async def end_experiment(program_id: str, experiment_id: str, who: Writer, rt: Rt) -> ExperimentOut:
    async with rt.transaction() as conn:
        return await handlers.act(conn, who.tenant_id, program_id, experiment_id, "end")


@router.post(
    BASE + "/{experiment_id}/promote",
    response_model=ExperimentOut,
    description="Ends the experiment with `variant` as its winner (experiment.ended.v1 carries "
    "it, with its config) and stops the split: every advocate gets the winner. The variant must "
    "be the readout's `known_winner`, else 409 on `/variant` unless `force` is true; a variant "
    "not of this experiment: 422 on `/variant`. A reward_rule experiment's winner becomes the "
    "program's reward rule: reward_rule.promoted.v1, in the same transaction, and reward-service "
    "writes the variant's config as a new rule version. The same promotion again answers the "
    "experiment unchanged (200, no event); another winner after the end, or a draft: 409 on "
    "`/status`.",
)
async def promote_variant(
    program_id: str, experiment_id: str, body: PromoteIn, who: Writer, rt: Rt
) -> ExperimentOut:
    async with rt.transaction() as conn:
        return await handlers.promote(
            conn, who.tenant_id, program_id, experiment_id, body.variant, body.force
        )


@router.get(BASE + "/{experiment_id}/assignments/{advocate_id}", response_model=AssignmentOut)
async def get_assignment(
    program_id: str, experiment_id: str, advocate_id: str, who: Reader, rt: Rt
) -> AssignmentOut:
    async with rt.transaction() as conn:
        return await handlers.assignment(
            conn, who.tenant_id, program_id, experiment_id, advocate_id
        )
