"""HTTP routes of the redirect. The other areas' routes are in their packages (programs.api,
advocates.api, enrollment.api).

`/r/{code}` is answered by redirect.RedirectMiddleware before routing; the routes declared here
for it only document it in the OpenAPI schema and are never reached."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from link_service.domain import Channel
from link_service.redirect import NOT_FOUND_PAGE

router = APIRouter()


# ---------------------------------------------------------------------------- redirect (docs)


@router.get("/r/{code}", tags=["redirect"], response_class=HTMLResponse, status_code=302)
async def redirect(code: str) -> HTMLResponse:
    """302 to the program's landing URL with `ref` and a new `click_id`; `?to=` a path or URL
    on an allowed domain deep-links; utm_* parameters are passed on. Unknown code: 404 page.
    HEAD answers the same without recording a click."""
    return HTMLResponse(NOT_FOUND_PAGE, status_code=404)  # answered by RedirectMiddleware


@router.get("/r/{code}/{channel}", tags=["redirect"], response_class=HTMLResponse, status_code=302)
async def redirect_channel(code: str, channel: Channel) -> HTMLResponse:
    """As `/r/{code}`, recording the share channel the link was sent through."""
    return HTMLResponse(NOT_FOUND_PAGE, status_code=404)  # answered by RedirectMiddleware
