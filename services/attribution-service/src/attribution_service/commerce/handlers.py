"""Use cases of the commerce integrations: per-tenant webhook secrets, and applying a verified
Shopify or Stripe delivery through the same handlers as our own API, in one transaction with the
delivery's receipt (so a replay is refused and changes nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from pydantic import ValidationError

from attribution_service.commerce import domain as commerce
from attribution_service.commerce import repository
from attribution_service.conversions import handlers as conversions
from attribution_service.conversions.schemas import ConversionIn
from attribution_service.programs import repository as programs
from attribution_service.refunds import handlers as refunds
from attribution_service.refunds import repository as refund_repository
from attribution_service.refunds.schemas import CancellationIn, RefundIn
from servicekit.ids import new_id
from servicekit.keyedhash import KeyedHash
from servicekit.pagination import PageQuery
from servicekit.problems import DomainError, InvalidInput, NotFound, pointer
from servicekit.secretbox import SecretBox

RECEIPT_RETENTION = timedelta(days=7)


async def configure(
    conn: asyncpg.Connection,
    tenant_id: str,
    provider: str,
    account: str,
    secret: str,
    sealer: SecretBox,
) -> asyncpg.Record:
    """Stores the secret sealed (servicekit.secretbox): never in clear at rest."""
    if provider == "shopify":
        account = account.lower()
    return await repository.upsert_integration(
        conn,
        id=new_id("int"),
        tenant_id=tenant_id,
        provider=provider,
        account=account,
        secret=sealer.seal(secret),
    )


async def integration_page(
    conn: asyncpg.Connection, tenant_id: str, provider: str | None, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.integration_page(conn, tenant_id, provider, page)


async def remove(conn: asyncpg.Connection, tenant_id: str, integration_id: str) -> None:
    if not await repository.delete_integration(conn, tenant_id, integration_id):
        raise NotFound(f"no integration '{integration_id}'", field="/integration_id")


async def integration(
    conn: asyncpg.Connection, provider: str, integration_id: str, sealer: SecretBox
) -> dict[str, Any]:
    """The integration a webhook URL names, its secret opened. Unknown ids answer like a bad
    signature, so the endpoint tells an outsider nothing."""
    row = await repository.get_integration(conn, integration_id)
    if row is None or row["provider"] != provider:
        raise commerce.Unverified("unknown integration", field="/integration_id")
    return {**row, "secret": sealer.open(row["secret"])}


async def apply(
    conn: asyncpg.Connection,
    integ: Mapping[str, Any],
    delivery_id: str,
    topic: str,
    action: commerce.Action,
    *,
    grace: timedelta,
    hash_key: KeyedHash,
    now: datetime,
) -> dict[str, Any]:
    """Apply one verified delivery and return its outcome, stored with its receipt. A delivery
    received before answers its stored outcome and changes nothing; one we cannot process
    (a refusal of ours, e.g. an amount out of bounds) is stored as ignored with the reason:
    both answer 2xx, so the platform stops retrying."""
    if not await repository.insert_receipt(conn, integ["id"], delivery_id, topic):
        return await repository.receipt_outcome(conn, integ["id"], delivery_id)
    outcome: dict[str, Any]
    try:
        # A savepoint: a refusal takes back what the delivery wrote, not its receipt.
        async with conn.transaction():
            outcome = await _apply(conn, integ, action, grace, hash_key, now)
    except (DomainError, ValidationError) as exc:
        outcome = _ignored(exc)
    await repository.set_receipt_outcome(conn, integ["id"], delivery_id, outcome)
    return outcome


def _ignored(exc: DomainError | ValidationError) -> dict[str, Any]:
    if isinstance(exc, DomainError):
        reason = commerce.unprocessable(exc).reason
    else:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "body"
        reason = f"unprocessable payload: {field}: {err['msg']}"
    return {"result": "ignored", "reason": reason}


async def _apply(
    conn: asyncpg.Connection,
    integ: Mapping[str, Any],
    action: commerce.Action,
    grace: timedelta,
    hash_key: KeyedHash,
    now: datetime,
) -> dict[str, Any]:
    tenant_id = integ["tenant_id"]
    outcome: dict[str, Any]
    if isinstance(action, commerce.Ignored):
        outcome = {"result": "ignored", "reason": action.reason}
    elif isinstance(action, commerce.ConversionAction):
        outcome = await _conversion(
            conn, tenant_id, integ["provider"], action, grace, hash_key, now
        )
    elif isinstance(action, commerce.RefundAction):
        outcome = await _refund(conn, tenant_id, action)
    else:
        row, _latest, _created = await refunds.cancel_subscription(
            conn,
            tenant_id,
            action.subscription_id,
            CancellationIn(customer_id=action.customer_id, cancelled_at=action.cancelled_at),
        )
        outcome = {"result": "cancelled", "subscription_id": row["subscription_id"]}
    return outcome


async def _conversion(
    conn: asyncpg.Connection,
    tenant_id: str,
    provider: str,
    action: commerce.ConversionAction,
    grace: timedelta,
    hash_key: KeyedHash,
    now: datetime,
) -> dict[str, Any]:
    body = dict(action.body)
    notes: list[str] = []
    if action.candidate_codes:
        keys = [c.upper() for c in action.candidate_codes]
        known = await programs.known_codes(conn, tenant_id, keys)
        if known:
            body["code"] = next(c for c in action.candidate_codes if c.upper() in known)
    try:
        cmd = ConversionIn.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = pointer(tuple(err.get("loc", ()))) or None
        raise InvalidInput(
            f"{provider} payload: {field or 'body'}: {err['msg']}", field=field
        ) from None
    try:
        row, created = await conversions.submit_conversion(
            conn, tenant_id, cmd, None, grace=grace, hash_key=hash_key, now=now, source=provider
        )
    except InvalidInput as exc:
        # Evidence we cannot use (another tenant's, or long gone) must not make the platform
        # retry the order forever: record the order without it and say so.
        if exc.field not in ("/code", "/click_id"):
            raise
        notes.append(exc.detail)
        cmd = cmd.model_copy(update={exc.field[1:]: None})
        row, created = await conversions.submit_conversion(
            conn, tenant_id, cmd, None, grace=grace, hash_key=hash_key, now=now, source=provider
        )
    return {
        "result": "conversion",
        "conversion_id": row["id"],
        "status": row["status"],
        "created": created,
        "notes": notes,
    }


async def _refund(
    conn: asyncpg.Connection, tenant_id: str, action: commerce.RefundAction
) -> dict[str, Any]:
    conv = await refund_repository.conversion_by_any_order(conn, tenant_id, action.order_ids)
    if conv is None:
        return {"result": "ignored", "reason": "no conversion for this order"}
    if action.cumulative_minor is not None:
        amount_minor = action.cumulative_minor - conv["refunded_minor"]
        if amount_minor <= 0:
            return {"result": "ignored", "reason": "already refunded", "conversion_id": conv["id"]}
        cmd = RefundIn(
            refund_id=action.refund_id,
            amount_minor=amount_minor,
            currency=action.currency,
            refunded_at=action.refunded_at,
        )
    else:
        cmd = RefundIn(
            refund_id=action.refund_id,
            amount=action.amount,
            currency=action.currency or None,
            refunded_at=action.refunded_at,
        )
    row, created = await refunds.refund(conn, tenant_id, conv["id"], cmd, None, conv=conv)
    return {
        "result": "refund",
        "conversion_id": conv["id"],
        "refund_id": row["id"],
        "created": created,
    }


async def prune_receipts(conn: asyncpg.Connection, now: datetime) -> int:
    """Webhook receipts outlive every replay window (Stripe's timestamp tolerance, Shopify's
    retry span) by far after a week; older deliveries are refused as stale anyway."""
    return await repository.prune_receipts(conn, now - RECEIPT_RETENTION)
