"""Response bodies, as they appear in the OpenAPI document."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    name: str
    version: int


class ClassScore(BaseModel):
    label: str
    probability: float


class ImagePrediction(BaseModel):
    filename: str | None = Field(None, description="The uploaded file's name.")
    label: str = Field(description="Most probable class.")
    probability: float = Field(description="Its probability.")
    top_k: list[ClassScore] = Field(description="The k most probable classes, best first.")
    probabilities: dict[str, float] = Field(description="All classes, in the model's order.")


class PredictResponse(ImagePrediction):
    model: ModelRef


class BatchPredictResponse(BaseModel):
    model: ModelRef
    results: list[ImagePrediction] = Field(description="One result per file, in upload order.")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str = Field(
        description="'ok', or 'dead' when no inference thread is left or a model call hangs."
    )
    detail: str | None = None


class Readiness(BaseModel):
    status: str = Field(description="'ready', 'starting', 'failed' or 'unavailable' (see detail).")
    model: ModelRef | None = None
    detail: str | None = Field(None, description="Why the model will not become ready.")
