"""The served model's card: JSON for programs (``GET /model``), Markdown for people
(``GET /model/card``). Behind the API keys where keys are configured: the card records how and
where the model was made. Neither names an absolute path: the serving host's is never put in,
and those of the machine that made the model (its data and run folders, in the card's record
and commands) are shown by their last component."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import KeyDep, ModelDep
from app.api.schemas import ErrorResponse
from app.errors import APIError

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


@router.get(
    "/model/card",
    summary="The served version's model card as people read it (Markdown, YAML front matter)",
    response_class=Response,
    responses={
        200: {"content": {"text/markdown": {"schema": {"type": "string"}}}},
        404: {"model": ErrorResponse, "description": "The served version has no README.md"},
        503: {"model": ErrorResponse},
    },
)
async def model_card_markdown(model: ModelDep) -> Response:
    """The ``README.md`` beside the served version's weights, which ``cifar10-model export``
    writes from the same ``model_card.json`` that ``GET /model`` serves."""
    path = model.path / MODEL_CARD_README
    try:
        text = without_host_paths(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise APIError(
            404, "not_found", f"version {model.version} has no {MODEL_CARD_README}"
        ) from None
    return Response(text, media_type="text/markdown; charset=utf-8")
