"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``): what the app's OpenAPI
document marks as an image gets a real one, the official-format CIFAR samples in samples/."""

from __future__ import annotations

import base64
from pathlib import Path

import hypothesis.strategies as st
import schemathesis

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))
IMAGES = st.sampled_from([p.read_bytes() for p in SAMPLES])

schemathesis.openapi.media_type("image/*", IMAGES)
schemathesis.openapi.media_type("application/octet-stream", IMAGES)
schemathesis.openapi.format("x-image-base64", IMAGES.map(lambda b: base64.b64encode(b).decode()))


@schemathesis.hook
def filter_case(context, case) -> bool:
    """'/predict' forms with 'file' alone. The schema declares no part type for 'files' (Swagger
    UI would send its placeholder entry as an image), so generated 'files' entries are random
    bytes, not images; 'files' is tested in tests/app/test_predict.py instead."""
    if case.operation.path == "/predict" and isinstance(case.body, dict):
        return "file" in case.body and "files" not in case.body
    return True
