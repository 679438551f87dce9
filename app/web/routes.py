"""The pages for people: the demo at ``/`` (with what it needs: the samples, the icon) and
ReDoc at ``/redoc`` (Swagger UI is fastapi-offline's). Plain HTML and JavaScript, no CDN, no
build step. Not in the OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response

from app.errors import APIError
from app.images import ACCEPTED_MEDIA_TYPES

WEB = Path(__file__).parent
SAMPLES = {p.name: p.read_bytes() for p in sorted((WEB / "samples").glob("*.png"))}
FAVICON = (WEB / "favicon.ico").read_bytes()
DEMO_PAGE = (WEB / "index.html").read_text(encoding="utf-8")
# Below this top probability the demo says "not sure", unless the served model's card sets its
# own ("not_sure_below"). The page states which.
DEFAULT_NOT_SURE_BELOW = 0.5
CACHE = {"Cache-Control": "public, max-age=3600"}

# ReDoc's bundle, as fastapi-offline ships it, but for its "API docs by Redocly" logo, which it
# loads from cdn.redoc.ly: the page is offline, so the logo's address is emptied (the bundle
# then hides the image, as it does when the logo fails to load).
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_JS = (Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js").read_bytes()
REDOC_JS = REDOC_JS.replace(REDOC_LOGO, b"")

router = APIRouter(include_in_schema=False)


def demo_config(request: Request) -> dict:
    """What the page checks before uploading, and what it says about the answer."""
    settings = request.app.state.settings
    model = request.app.state.model
    card = model.card if model is not None else {}
    threshold = card.get("not_sure_below")
    if not (isinstance(threshold, int | float) and 0 < threshold < 1):  # absent, or unusable
        threshold = None
    return {
        "max_upload_bytes": settings.max_upload_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "accepted_types": [t.strip() for t in ACCEPTED_MEDIA_TYPES.split(",")],
        "default_top_k": settings.default_top_k,
        "class_names": list(model.class_names) if model is not None else [],
        "not_sure_below": threshold if threshold is not None else DEFAULT_NOT_SURE_BELOW,
        "not_sure_source": "set by the model card"
        if threshold is not None
        else "this page's default",
        "samples": list(SAMPLES),
        # the card's page and JSON answer 401 to a browser then (it cannot send the key)
        "keys_required": request.app.state.api_keys.enabled,
    }


@router.get("/")
async def demo(request: Request) -> HTMLResponse:
    """Try the model: a sample, a chosen or dropped image; the answer as bars."""
    # JSON inside <script>: only "<" could end the element early; \u003c is the same JSON
    config = json.dumps(demo_config(request)).replace("<", "\\u003c")
    return HTMLResponse(DEMO_PAGE.replace("{{CONFIG}}", config))


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(FAVICON, media_type="image/x-icon", headers=CACHE)


@router.get("/samples/{name}")
async def sample(name: str) -> Response:
    """One of the ten sample images (``samples/`` in the repository), by its file name."""
    data = SAMPLES.get(name)
    if data is None:
        raise APIError(404, "not_found", f"no sample {name!r}; samples: {', '.join(SAMPLES)}")
    return Response(data, media_type="image/png", headers=CACHE)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc, every file from this server."""
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/docs-assets/redoc.standalone.js",
        redoc_favicon_url=f"{root}/favicon.ico",
        with_google_fonts=False,
    )


@router.get("/docs-assets/redoc.standalone.js")
async def redoc_js() -> Response:
    return Response(REDOC_JS, media_type="text/javascript", headers=CACHE)
