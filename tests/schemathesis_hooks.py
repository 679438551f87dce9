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
