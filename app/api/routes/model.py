"""The served model's card: JSON for programs (``GET /model``), Markdown or a page for people
(``GET /model/card``, the files it links to under ``GET /model/files/{name}``). Behind the API
keys where keys are configured: the card records how and where the model was made. None of them
names an absolute path: the serving host's is never put in, and those of the machine that made
the model (its data and run folders, in the card's record and commands) are shown by their last
component."""

from __future__ import annotations

import mimetypes
import re
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from app.api.deps import KeyDep, ModelDep
from app.api.schemas import ErrorResponse
from app.errors import APIError
from app.web.card_page import CONTENT_SECURITY_POLICY, JSON_CARD, Card, read_card, render

MODEL_CARD_README = "README.md"
# An absolute path under a root where machines keep data, runs and homes (never an API path
# such as /v2/models/...): "/var/tmp/cifar10-data/cifar-10-batches-py" -> "cifar-10-batches-py"
_HOST_PATH = re.compile(
    r"(?<![\w:/.~-])/(?:var|tmp|root|home|work|mnt|data|opt|srv|scratch|Users)"
    r"(?:/[\w.~-]+)*/([\w.~-]+)"
)


def without_host_paths(value):
    """``value`` (a card: dicts, lists, strings) with every absolute path cut to its last
    component."""
    if isinstance(value, str):
        return _HOST_PATH.sub(r"\1", value)
    if isinstance(value, dict):
        return {k: without_host_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_host_paths(v) for v in value]
    return value


router = APIRouter(tags=["model"], dependencies=[KeyDep])


@router.get(
    "/model",
    summary="The served model's card: classes, input, accuracy, training recipe",
    responses={503: {"model": ErrorResponse}},
)
async def model_card(model: ModelDep, request: Request) -> dict:
    reloader = request.app.state.reloader
    failure = reloader.failure if reloader is not None else None
    return {
        **without_host_paths(model.card),
        "served": {
            **model.describe(),
            "path": f"{model.path.parent.name}/{model.path.name}",  # never the host's own
            "input_size": list(model.input_size),
            "reload": {
                "polling": reloader is not None,
                "last_failure": (
                    {"version": failure.version, "error": failure.error} if failure else None
                ),
            },
        },
    }


CARD_TYPES = ("text/markdown", "text/html")


def preferred(accept: str, offers: tuple[str, ...]) -> str:
    """The offer an ``Accept`` header prefers (RFC 9110 12.5.1): each offer takes the quality
    of the most specific range that matches it (``text/html`` before ``text/*`` before
    ``*/*``), clamped to 0-1; the highest wins, the first offer on a tie or with no header."""
    ranges = []
    for item in accept.split(","):
        kind, *params = (s.strip() for s in item.split(";"))
        kind = kind.lower()
        if "/" not in kind:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
                if q != q:  # NaN
                    q = 0.0
        ranges.append((kind, q))
    if not ranges:
        return offers[0]

    def quality(offer: str) -> float:
        best = (-1, 0.0)  # (specificity, q)
        for kind, q in ranges:
            if kind == offer:
                specificity = 2
            elif kind == offer.split("/")[0] + "/*":
                specificity = 1
            elif kind == "*/*":
                specificity = 0
            else:
                continue
            best = max(best, (specificity, q), key=lambda s: s[0])
        return best[1]

    scores = [quality(offer) for offer in offers]
    top = max(scores)
    return offers[scores.index(top)] if top > 0 else offers[0]


def _card(model) -> Card:
    path = model.path / MODEL_CARD_README
    try:
        text = without_host_paths(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise APIError(
            404, "not_found", f"version {model.version} has no {MODEL_CARD_README}"
        ) from None
    return read_card(text, model.path)


@router.get(
    "/model/card",
    summary="The served version's model card: a page for browsers, Markdown for programs",
    response_class=Response,
    responses={
        200: {
            "description": "Markdown with YAML front matter, or (for a browser: `Accept: "
            "text/html` preferred, or `?format=html`) the card as a page with its figures.",
            "content": {
                "text/markdown": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
        },
        404: {"model": ErrorResponse, "description": "The served version has no README.md"},
        503: {"model": ErrorResponse},
    },
)
async def model_card_markdown(
    model: ModelDep,
    request: Request,
    format: Literal["markdown", "html"] | None = Query(
        None, description="Overrides the Accept header's choice."
    ),
) -> Response:
    """The ``README.md`` beside the served version's weights, which ``cifar10-model export``
    writes from the same ``model_card.json`` that ``GET /model`` serves. Browsers get it as a
    page (content negotiation on ``Accept``; ``Vary: Accept``)."""
    card = _card(model)
    kind = (
        {"markdown": "text/markdown", "html": "text/html"}[format]
        if format
        else preferred(request.headers.get("accept", ""), CARD_TYPES)
    )
    headers = {"Vary": "Accept", "X-Content-Type-Options": "nosniff"}
    if kind == "text/html":
        page = render(card, f"{model.name}, version {model.version}: model card")
        return HTMLResponse(
            page, headers={**headers, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
        )
    return Response(card.text, media_type="text/markdown; charset=utf-8", headers=headers)


@router.get(
    "/model/files/{name}",
    summary="A file the served version's card links to: its figures and its JSON card",
    response_class=Response,
    responses={
        200: {
            "description": "The file (`model_card.json` as `GET /model` shows it: no host paths).",
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        404: {"model": ErrorResponse, "description": "Not a file the card links to"},
        503: {"model": ErrorResponse},
    },
)
async def model_file(model: ModelDep, name: str) -> Response:
    """Only the names the card itself links to, in the version's folder; never a path."""
    path = _card(model).files.get(name)
    if path is None:
        raise APIError(
            404, "not_found", f"the card of version {model.version} links to no file {name!r}"
        )
    nosniff = {"X-Content-Type-Options": "nosniff"}
    if name == JSON_CARD:
        return JSONResponse(without_host_paths(model.card), headers=nosniff)
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(path.read_bytes(), media_type=media_type, headers=nosniff)
