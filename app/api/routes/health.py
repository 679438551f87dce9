"""Liveness, readiness and the model card (JSON for programs, Markdown for people)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.deps import ModelDep
from app.api.schemas import ErrorResponse, Health, ModelRef, Readiness
from app.errors import APIError

MODEL_CARD_README = "README.md"

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=Health,
    response_model_exclude_none=True,
    summary="Liveness: the process is up and can still serve",
    responses={503: {"model": Health, "description": "No inference thread is left; restart."}},
)
async def health(request: Request):
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is not None and batcher.dead:
        return JSONResponse({"status": "dead", "detail": batcher.dead}, status_code=503)
    return Health(status="ok")


@router.get(
    "/health/ready",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses={
        503: {
            "model": Readiness,
            "description": "Model not loaded or not warmed up yet ('starting'); its warm-up "
            "failed or no inference thread is left ('failed'; restart the process); or a model "
            "call is running longer than the request timeout ('unavailable').",
        }
    },
    summary="Readiness: the model is loaded and warmed up",
)
async def ready(request: Request):
    model = getattr(request.app.state, "model", None)
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is not None and batcher.failure:
        return JSONResponse({"status": "failed", "detail": batcher.failure}, status_code=503)
    if model is None or batcher is None or not batcher.ready.is_set():
        return JSONResponse({"status": "starting"}, status_code=503)
    if (problem := batcher.health()) is not None:
        return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
    return Readiness(status="ready", model=ModelRef(name=model.name, version=model.version))


@router.get(
    "/model",
    summary="The served model's card: classes, input, accuracy, training recipe",
    responses={503: {"model": ErrorResponse}},
)
async def model_card(model: ModelDep, request: Request) -> dict:
    reloader = request.app.state.reloader
    failure = reloader.failure if reloader is not None else None
    return {
        **model.card,
        "served": {
            **model.describe(),
            "path": str(model.path),
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
        text = path.read_bytes()
    except FileNotFoundError:
        raise APIError(
            404, "not_found", f"version {model.version} has no {MODEL_CARD_README}"
        ) from None
    return Response(text, media_type="text/markdown; charset=utf-8")
