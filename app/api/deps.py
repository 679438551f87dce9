"""Typed dependencies: what a route needs from the running app.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a
thread hop per dependency per request. (The inference endpoints skip ``Depends`` on their hot
path: they call ``InferenceCore.for_request`` once.)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.inference import served_model
from app.metrics import Metrics
from app.model import ServedModel


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_model(request: Request) -> ServedModel:
    return served_model(request)


async def check_api_key(request: Request) -> None:
    """401 unless the request carries a configured key (where keys are configured)."""
    request.app.state.api_keys.check(request)


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelDep = Annotated[ServedModel, Depends(get_model)]
KeyDep = Depends(check_api_key)
