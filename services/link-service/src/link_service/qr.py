"""QR codes of share links (segno): one rendering for the API-key route and the advocate's own."""

from __future__ import annotations

import asyncio
import io
from typing import Literal

import segno

QrFormat = Literal["png", "svg"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}


def _render(link: str, kind: QrFormat, scale: int) -> bytes:
    buffer = io.BytesIO()
    segno.make(link, error="m", micro=False).save(buffer, kind=kind, scale=scale, border=4)
    return buffer.getvalue()


async def render(link: str, kind: QrFormat, scale: int) -> bytes:
    """Off the event loop: a large PNG takes milliseconds."""
    return await asyncio.to_thread(_render, link, kind, scale)
