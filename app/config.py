"""Serving settings: one pydantic-settings class, read from ``CIFAR10_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """How the server runs: each field is the ``CIFAR10_<NAME>`` environment variable (or a
    ``cifar10-serve`` flag). ``get_settings`` reads them once; tests pass their own."""

    model_config = SettingsConfigDict(env_prefix="CIFAR10_", protected_namespaces=())

    model_dir: Path = Field(
        Path("models/cifar10-resnet50"),
        description="Folder holding numbered SavedModel versions (TF Serving layout).",
    )
    model_version: int | None = Field(None, description="Pin a version; default: the newest.")
    model_poll_s: float = Field(
        0.0,
        ge=0,
        description="Poll the model folder every N seconds and swap in a newer version without "
        "downtime (0: off; not with a pinned version).",
    )
    runtime: Literal["auto", "openvino", "tensorflow"] = Field(
        "auto", description="Inference runtime; auto: OpenVINO where it is installed."
    )
    precision: Literal["auto", "f32", "bf16", "int8"] = Field(
        "auto",
        description="auto: int8 where the version has an accepted one (OpenVINO), else bf16 "
        "where the CPU has AVX512_BF16 or AMX (OpenVINO), else f32.",
    )
    inference_streams: int = Field(
        1,
        ge=1,
        le=64,
        description="Batches the model computes at once, each on its share of the cores "
        "(OpenVINO; 1: every core on each batch, the lowest latency; 2 on 2 cores: bf16 serves "
        "more images per second under load, a lone image waits longer).",
    )
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Per image file.")
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="Per request body, any route; each inference route's cap is the smaller of "
        "this and what max_files images can take in its format (refused from Content-Length "
        "or while streaming; the rest of such a body is read and discarded within its deadline, "
        "or the connection closed).",
    )
    max_buffered_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Request bodies held at once, all requests together; a body beyond it is "
        "answered 503 with Retry-After (read and discarded first, so the client sees the "
        "answer). Peak memory grows by about three times this under a flood of large bodies.",
    )
    max_files: int = Field(32, ge=1, description="Images per request (field 'files').")
    body_grace_s: float = Field(
        10.0,
        gt=0,
        description="A request body must arrive within this many seconds plus one per MiB; "
        "beyond it 408 and its share of the body budget is freed (slow or idle senders).",
    )
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="Refuse larger declared dimensions before decoding."
    )
    max_decoding_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Pixels being decoded at once, all requests together (a decode takes 3-8 "
        "bytes per pixel); a large image waits for its turn. At least max_image_pixels.",
    )
    max_batch_size: int = Field(16, ge=1, description="Images per model call.")
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="Extra wait for more requests when the model is idle (0: run at once).",
    )
    queue_limit: int = Field(256, ge=1, description="Images waiting; beyond it 503.")
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a request waits for its images to be computed (queue and model "
        "call); beyond it 504, and a model call running longer makes readiness fail.",
    )
    warmup_runs: int = Field(2, ge=0, description="Model calls before the app reports ready.")
    default_top_k: int = Field(3, ge=1, le=10)
    api_keys: str | None = Field(
        None,
        description="Comma-separated API keys; when set, the inference endpoints need one "
        "(Authorization: Bearer KEY or X-API-Key: KEY). Off by default.",
    )
    root_path: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="The path prefix a proxy serves the app under and strips (e.g. /api): "
        "links and the OpenAPI document name it (uvicorn's --root-path).",
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry (a span, metrics and logs per request, where "
        "an OpenTelemetry SDK is configured); off: it costs every request its check.",
    )
    log_level: str = Field("info")
    host: str = Field("0.0.0.0")
    port: int = Field(8000, ge=1, le=65535)
    shutdown_timeout_s: float = Field(30.0, ge=0, description="Grace for in-flight requests.")
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="Seconds an idle keep-alive connection is held open. Keep it above the "
        "idle timeout of every client and load balancer in front (httpx: 5 s, AWS ALB: 60 s) "
        "so that they close first: with equal timeouts a request sent just as the server "
        "closes the connection is dropped unanswered.",
    )

    @model_validator(mode="after")
    def _settings_that_work_together(self) -> Settings:
        """Refuse combinations that cannot work, in one line each, before anything loads."""
        if self.queue_limit < self.max_files:
            raise ValueError(
                f"queue_limit ({self.queue_limit}) must be at least max_files "
                f"({self.max_files}): a request of max_files images could never be queued"
            )
        if self.max_buffered_bytes < self.max_request_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least "
                f"max_request_bytes ({self.max_request_bytes}): a request of the largest "
                "size could never be buffered"
            )
        if self.max_request_bytes < self.max_upload_bytes:
            raise ValueError(
                f"max_request_bytes ({self.max_request_bytes}) must be at least "
                f"max_upload_bytes ({self.max_upload_bytes}): a file of the largest size "
                "could never be sent"
            )
        if self.max_decoding_pixels < self.max_image_pixels:
            raise ValueError(
                f"max_decoding_pixels ({self.max_decoding_pixels}) must be at least "
                f"max_image_pixels ({self.max_image_pixels}): an image of the largest size "
                "could never be decoded"
            )
        if self.model_poll_s > 0 and self.model_version is not None:
            raise ValueError(
                "model_poll_s and model_version exclude each other: a pinned version is never "
                "reloaded (unset one)"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
