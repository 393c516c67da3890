"""HTTP routes of the redirect. The other areas' routes are in their packages (programs.api,
advocates.api, enrollment.api).

`/r/...` is answered by redirect.RedirectMiddleware before routing; the routes declared here
answer it only with the front door off (FRONT_DOOR=false), with the same code (redirect.answer).
HEAD is declared apart: FastAPI adds it to no GET route, and an operation per method would
repeat the docs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from link_service import domain
from link_service.redirect.front import answer
from link_service.web import link_state
from servicekit.auth import public
from servicekit.front import RawAnswer

router = APIRouter()


# ---------------------------------------------------------------------------- redirect


@router.get(
    "/r/{code}",
    dependencies=[public("the public redirect")],
    tags=["redirect"],
    response_class=HTMLResponse,
    status_code=302,
)
@router.head("/r/{code}", dependencies=[public("the public redirect")], include_in_schema=False)
async def redirect(code: str, request: Request) -> Response:
    """302 to the program's landing URL with `ref` and a new `click_id`; `?to=` a path or URL
    on an allowed domain deep-links; utm_* parameters are passed on. Unknown code: 404 page.
    HEAD answers the same without recording a click."""
    return _redirect(request)


@router.get(
    "/r/{code}/{channel}",
    dependencies=[public("the public redirect")],
    tags=["redirect"],
    response_class=HTMLResponse,
    status_code=302,
)
@router.head(
    "/r/{code}/{channel}", dependencies=[public("the public redirect")], include_in_schema=False
)
async def redirect_channel(
    code: str,
    request: Request,
    channel: Annotated[
        str, Path(description=f"{', '.join(domain.SHARE_CHANNELS)}; anything else: none")
    ],
) -> Response:
    """As `/r/{code}`, recording the share channel the link was sent through."""
    return _redirect(request)


@router.get("/r/{path:path}", dependencies=[public("the public redirect")], include_in_schema=False)
@router.head(
    "/r/{path:path}", dependencies=[public("the public redirect")], include_in_schema=False
)
async def redirect_elsewhere(path: str, request: Request) -> Response:
    """Any other path under /r/: the not-found page, as the redirect answers it."""
    return _redirect(request)


def _redirect(request: Request) -> Response:
    state = link_state(request)
    return RawAnswer(lambda scope, send: answer(state, scope, send))
