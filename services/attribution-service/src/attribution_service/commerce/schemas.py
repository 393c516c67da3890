"""Bodies of the commerce integration routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class IntegrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["shopify", "stripe"]
    # Shopify: the shop's myshopify.com domain; Stripe: the account id (acct_...) or "default".
    account: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._-]+$")
    secret: str = Field(min_length=8, max_length=500, repr=False)


class IntegrationOut(BaseModel):
    id: str
    provider: str
    account: str
    webhook_path: str
    created_at: datetime
    updated_at: datetime
