"""Typed dependencies: what a route needs from the running app.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a
thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.batching import MicroBatcher
from app.config import Settings
from app.errors import APIError
from app.metrics import Metrics
from app.model import ServedModel


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_model(request: Request) -> ServedModel:
    model = getattr(request.app.state, "model", None)
    if model is None:
        raise APIError(503, "model_not_loaded", "the model is not loaded yet", {"Retry-After": "5"})
    return model


async def get_batcher(request: Request) -> MicroBatcher:
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is None:
        raise APIError(503, "model_not_loaded", "the model is not loaded yet", {"Retry-After": "5"})
    return batcher


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelDep = Annotated[ServedModel, Depends(get_model)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
