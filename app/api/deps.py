"""Typed dependencies: what a route needs from the running app.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a
thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Request

from app.batching import MicroBatcher
from app.config import Settings
from app.errors import APIError
from app.metrics import Metrics
from app.model import ServedModel


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _loaded(request: Request, attribute: str):
    value = getattr(request.app.state, attribute, None)
    if value is None:
        raise APIError(503, "model_not_loaded", "the model is not loaded yet", {"Retry-After": "5"})
    return value


class Serving(NamedTuple):
    """What an inference endpoint works with."""

    settings: Settings
    model: ServedModel
    batcher: MicroBatcher
    metrics: Metrics


def serving_state(request: Request) -> Serving:
    """Everything an inference endpoint needs, in one call (the hot path skips ``Depends``);
    checks the API key first, where keys are configured."""
    state = request.app.state
    state.api_keys.check(request)
    return Serving(
        state.settings, _loaded(request, "model"), _loaded(request, "batcher"), state.metrics
    )


async def get_model(request: Request) -> ServedModel:
    return _loaded(request, "model")


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelDep = Annotated[ServedModel, Depends(get_model)]
