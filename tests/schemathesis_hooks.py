"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``): what the app's OpenAPI
document marks as an image gets a real one, the official-format CIFAR samples in samples/.

With ``FUZZ_IMAGES=hostile`` the image values are what an attacker would send instead: besides
real images, base64 with non-ASCII characters, bad padding or stray characters, base64 of
truncated, header-only or random bytes, and arbitrary bytes as files (a server must answer each
with a 4xx, never a 5xx; such values are not schema-valid images, so this mode is only for the
no-server-error check)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import hypothesis.strategies as st
import schemathesis

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))
IMAGES = st.sampled_from([p.read_bytes() for p in SAMPLES])
B64_IMAGES = IMAGES.map(lambda b: base64.b64encode(b).decode())


def _hostile_files() -> st.SearchStrategy[bytes]:
    """Real images, and bytes that only start like one or are not one at all."""
    return st.one_of(
        IMAGES,
        st.binary(max_size=64),
        IMAGES.flatmap(lambda b: st.integers(0, len(b) - 1).map(lambda n: b[:n])),  # truncated
        IMAGES.map(lambda b: b[:33]),  # signature and header only
    )


def _hostile_base64() -> st.SearchStrategy[str]:
    """Valid base64 of real or broken images, and strings that are not base64 at all."""
    encoded = _hostile_files().map(lambda b: base64.b64encode(b).decode())
    return st.one_of(
        encoded,
        st.text(max_size=16),  # any Unicode, '\u0089' included
        encoded.map(lambda s: s.rstrip("=")[:-1] if len(s) > 1 else s + "="),  # bad padding
        st.tuples(encoded, st.sampled_from(["\u0089", "é", "!", " ", "-_", "\x00"])).map(
            lambda t: t[0][: len(t[0]) // 2] + t[1] + t[0][len(t[0]) // 2 :]
        ),
    )


if os.environ.get("FUZZ_IMAGES") == "hostile":
    schemathesis.openapi.media_type("image/*", _hostile_files())
    schemathesis.openapi.media_type("application/octet-stream", _hostile_files())
    schemathesis.openapi.format("x-image-base64", _hostile_base64())
else:
    schemathesis.openapi.media_type("image/*", IMAGES)
    schemathesis.openapi.media_type("application/octet-stream", IMAGES)
    schemathesis.openapi.format("x-image-base64", B64_IMAGES)


@schemathesis.hook
def filter_case(context, case) -> bool:
    """'/predict' forms with 'file' alone. The schema declares no part type for 'files' (Swagger
    UI would send its placeholder entry as an image), so generated 'files' entries are random
    bytes, not images; 'files' is tested in tests/app/test_predict.py instead. (Hostile mode
    keeps every case: random bytes are what it wants.)"""
    if os.environ.get("FUZZ_IMAGES") == "hostile":
        return True
    if case.operation.path == "/predict" and isinstance(case.body, dict):
        return "file" in case.body and "files" not in case.body
    return True


SAMPLE_B64 = [base64.b64encode(p.read_bytes()).decode() for p in SAMPLES]


def _is_image_b64(value: object) -> bool:
    try:
        return base64.b64decode(value, validate=True).startswith(b"\x89PNG")
    except (TypeError, ValueError):
        return False


def _real_images(value: object) -> object:
    """``value`` (a JSON body) with every base64 image that is not one made a real sample: in
    an Open Inference Protocol ``BYTES`` tensor, and in TF Serving's ``{"b64": ...}``."""
    if isinstance(value, dict):
        if value.get("datatype") == "BYTES" and isinstance(value.get("data"), list):
            return {
                **value,
                "data": [
                    v if _is_image_b64(v) else SAMPLE_B64[i % len(SAMPLE_B64)]
                    for i, v in enumerate(value["data"])
                ],
            }
        if set(value) == {"b64"} and not _is_image_b64(value["b64"]):
            return {"b64": SAMPLE_B64[0]}
        return {k: _real_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_real_images(v) for v in value]
    return value


@schemathesis.hook
def before_call(context, case, **kwargs) -> None:
    """The coverage phase draws its values from the schema's bounds and patterns, not from the
    image format above: a schema-valid base64 string such as "0000" is no image, which the
    server must refuse (400). In a positive case (valid images mode) such strings become real
    samples, so that a schema-valid request is one the server can accept."""
    if os.environ.get("FUZZ_IMAGES") == "hostile" or case.meta is None:
        return
    if case.meta.generation.mode.name != "POSITIVE":
        return
    if case.media_type == "application/json" and isinstance(case.body, dict | list):
        body = _real_images(case.body)
        if body != case.body:  # an untouched case stays as generated
            case.body = body
