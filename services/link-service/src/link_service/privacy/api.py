"""HTTP routes of personal data requests (scope `privacy:admin`): export or erase one person
across all four services, and follow the request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from link_service.privacy import handlers
from link_service.privacy.schemas import RequestAccepted, RequestOut, SubjectIn
from link_service.web import Rt, settings
from referral_events.contracts.privacy import RequestKind
from servicekit.auth import Principal, requires
from servicekit.problems import InvalidInput
from servicekit.runtime import Runtime

router = APIRouter(tags=["privacy"])

Privacy = Annotated[Principal, requires("privacy:admin")]


async def _request(
    kind: RequestKind, body: SubjectIn, who: Principal, rt: Runtime
) -> RequestAccepted:
    if body.customer_id is None and body.email is None:
        raise InvalidInput("name the person: customer_id, email or both", field="/customer_id")
    s = settings(rt)
    async with rt.transaction() as conn:
        row = await handlers.request(
            conn,
            tenant_id=who.tenant_id,
            requested_by=who.key_id or "unknown",
            kind=kind,
            customer_id=body.customer_id,
            email=body.email,
            key=s.privacy_hash_key.encode(),
            chunk_bytes=s.privacy_export_chunk_bytes,
        )
    return RequestAccepted(
        id=row["id"], kind=kind, status="pending", requested_at=row["requested_at"]
    )


@router.post("/v1/privacy/exports", status_code=202, response_model=RequestAccepted)
async def request_export(body: SubjectIn, who: Privacy, rt: Rt) -> RequestAccepted:
    """Every service's rows about the person, as one JSON document once all have answered."""
    return await _request("export", body, who, rt)


@router.post("/v1/privacy/erasures", status_code=202, response_model=RequestAccepted)
async def request_erasure(body: SubjectIn, who: Privacy, rt: Rt) -> RequestAccepted:
    """Erase or pseudonymise the person everywhere; each service confirms."""
    return await _request("erasure", body, who, rt)


@router.get("/v1/privacy/requests/{request_id}", response_model=RequestOut)
async def get_request(request_id: str, who: Privacy, rt: Rt) -> RequestOut:
    async with rt.transaction() as conn:
        return RequestOut.model_validate(await handlers.status(conn, who.tenant_id, request_id))
