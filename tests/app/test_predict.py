"""POST /predict: formats, modes, several files, top-k, and agreement with the bare model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.api.schemas import BatchPredictResponse, ImagePrediction, PredictResponse
from app.errors import api_error_for
from app.images import ImageError, decode_opened, open_upload
from app.model import load_served_model
from tests.helpers import CLASS_NAMES, huge_png, image_bytes


def decode(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    return decode_opened(open_upload(data, max_pixels), size)


def test_single_png_returns_label_probabilities_and_model(client):
    r = client.post("/predict", files={"file": ("cat.png", image_bytes("PNG"), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in CLASS_NAMES
    assert set(body["probabilities"]) == set(CLASS_NAMES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["probability"] == pytest.approx(max(body["probabilities"].values()))
    assert body["top_k"][0]["label"] == body["label"] and len(body["top_k"]) == 3
    assert body["model"] == {"name": "tiny", "version": 1}
    assert body["filename"] == "cat.png"
    # The body is built by hand for speed: it must be exactly the documented schema.
    assert set(body) == set(PredictResponse.model_fields)
    PredictResponse.model_validate(body)


def test_prediction_matches_the_bare_savedmodel(client, tiny_model_root):
    data = image_bytes("PNG")
    served = client.post("/predict", files={"file": ("x.png", data, "image/png")}).json()
    model = load_served_model(tiny_model_root)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    direct = model.predict(pixels)[0]
    got = np.array([served["probabilities"][n] for n in CLASS_NAMES])
    np.testing.assert_allclose(got, direct, atol=1e-5)


def test_top_k_query_parameter(client):
    r = client.post("/predict?top_k=10", files={"file": ("a.png", image_bytes(), "image/png")})
    assert r.status_code == 200
    scores = [s["probability"] for s in r.json()["top_k"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    bad = client.post("/predict?top_k=0", files={"file": ("a.png", image_bytes(), "image/png")})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "fmt,mode,save",
    [
        ("JPEG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "L", {}),
        ("PNG", "P", {}),
        ("WEBP", "RGB", {"lossless": True}),
        ("BMP", "RGB", {}),
        ("TIFF", "RGB", {}),
        ("TIFF", "CMYK", {}),
        ("JPEG", "CMYK", {}),
        ("GIF", "P", {}),
    ],
)
def test_accepted_formats_and_modes(client, fmt, mode, save):
    data = image_bytes(fmt, size=(50, 40), mode=mode, **save)
    r = client.post(
        "/predict", files={"file": (f"x.{fmt.lower()}", data, "application/octet-stream")}
    )
    assert r.status_code == 200, r.text
    assert r.json()["label"] in CLASS_NAMES


def test_sixteen_bit_png_keeps_its_range():
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    arr[:4] = 0
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = decode(buf.getvalue(), (8, 8), 10_000)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[7, 7].tolist() == [255, 255, 255]


def test_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode(buf.getvalue(), (16, 16), 10_000)
    assert out[8, 8, 0] > 200 and out[8, 8, 2] < 50


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 255, 255)  # left half white, landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    out = decode(buf.getvalue(), (40, 20), 10_000)  # (height, width): portrait
    assert out.shape == (40, 20, 3)
    assert out[5, 10].mean() > 200 and out[35, 10].mean() < 50  # white on top after rotation


def test_transparency_is_composited_on_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = decode(buf.getvalue(), (8, 8), 10_000)
    assert (out == 255).all()


def test_large_image_is_resized_with_antialiasing():
    stripes = np.zeros((320, 320, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: naive subsampling would give all-black or white
    buf = io.BytesIO()
    Image.fromarray(stripes).save(buf, format="PNG")
    out = decode(buf.getvalue(), (32, 32), 1_000_000)
    assert 100 < out.mean() < 155


def test_several_files_answer_one_result_each_in_order(client):
    uploads = [
        ("files", (f"img{i}.png", image_bytes(color=(40 * i, 10, 200 - 40 * i)), "image/png"))
        for i in range(3)
    ]
    r = client.post("/predict", files=uploads)
    assert r.status_code == 200, r.text
    BatchPredictResponse.model_validate(r.json())
    assert set(r.json()) == set(BatchPredictResponse.model_fields)
    results = r.json()["results"]
    assert all(set(x) == set(ImagePrediction.model_fields) for x in results)
    assert [x["filename"] for x in results] == ["img0.png", "img1.png", "img2.png"]
    for (_, (name, data, ctype)), result in zip(uploads, results, strict=True):
        alone = client.post("/predict", files={"file": (name, data, ctype)}).json()
        assert result["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-5)


def test_open_upload_reads_only_the_header():
    img = open_upload(image_bytes("PNG", size=(50, 40)), max_pixels=10_000)
    assert img.size == (50, 40)
    # An 8000x8000 header with almost no data behind it: accepted by size alone when the
    # limit allows, so nothing was decoded; refused with 413 when it does not.
    assert open_upload(huge_png(8000, 8000), max_pixels=64_000_000).size == (8000, 8000)
    with pytest.raises(ImageError) as refused:
        open_upload(huge_png(8000, 8000), max_pixels=1_000_000)
    assert api_error_for(refused.value).status_code == 413
    assert api_error_for(refused.value).code == "image_too_large"
    with pytest.raises(ImageError) as garbage:
        open_upload(b"not an image", max_pixels=10_000)
    assert api_error_for(garbage.value).status_code == 400


def test_raw_image_body_is_one_upload(client):
    png = image_bytes("PNG")
    multipart = client.post("/predict?top_k=2", files={"file": ("x.png", png, "image/png")})
    for content_type in ("image/png", "application/octet-stream"):
        r = client.post("/predict?top_k=2", content=png, headers={"Content-Type": content_type})
        assert r.status_code == 200, r.text
        body = r.json()
        PredictResponse.model_validate(body)
        assert body["filename"] is None and len(body["top_k"]) == 2
        assert body["probabilities"] == pytest.approx(multipart.json()["probabilities"], abs=1e-5)


def test_raw_body_gets_the_same_errors_and_limits(client):
    def raw(data: bytes, content_type: str = "image/png"):
        return client.post("/predict", content=data, headers={"Content-Type": content_type})

    cases = [
        (raw(b""), 400, "empty_file"),
        (raw(b"not an image at all"), 400, "invalid_image"),
        (raw(huge_png()), 413, "image_too_large"),
        (raw(b"\0" * 200_001), 413, "file_too_large"),  # the client fixture's per-file limit
        (raw(image_bytes("ICO", size=(16, 16)), "image/x-icon"), 415, "unsupported_image_type"),
        (raw(b"{}", "application/json"), 422, "missing_file"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (code, r.text)
        assert r.json()["error"]["code"] == code
    assert raw(image_bytes("PNG")).status_code == 200  # still serving
