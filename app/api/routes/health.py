"""Liveness and readiness, open to orchestrators even where API keys are configured."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.schemas import Health, ModelRef, Readiness

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=Health,
    response_model_exclude_none=True,
    summary="Liveness: the process is up and can still serve",
    responses={
        503: {
            "model": Health,
            "description": "No inference thread is left, or a model call has run for four times "
            "the request timeout: restart.",
        }
    },
)
async def health(request: Request):
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is not None and (problem := batcher.hung()):
        return JSONResponse({"status": "dead", "detail": problem}, status_code=503)
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
