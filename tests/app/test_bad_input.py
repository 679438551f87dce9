"""Every bad input gets a JSON error of one shape and the right status; serving goes on."""

from __future__ import annotations

import pytest

from tests.helpers import huge_png, image_bytes

CASES = [
    ("not_an_image", {"file": ("a.png", b"hello, I am text", "image/png")}, 400, "invalid_image"),
    (
        "truncated",
        {"file": ("a.png", image_bytes("PNG", size=(64, 64))[:120], "image/png")},
        400,
        "invalid_image",
    ),
    ("empty", {"file": ("a.png", b"", "image/png")}, 400, "empty_file"),
    ("text_type", {"file": ("a.txt", b"plain words", "text/plain")}, 415, "unsupported_media_type"),
    (
        "ico_format",
        {"file": ("a.ico", image_bytes("ICO", size=(16, 16)), "image/x-icon")},
        415,
        "unsupported_image_type",
    ),
    ("bomb", {"file": ("bomb.png", huge_png(), "image/png")}, 413, "image_too_large"),
    (
        "bomb_over_our_limit",
        {"file": ("b.png", huge_png(8000, 8000), "image/png")},
        413,
        "image_too_large",
    ),
    (
        "file_too_large",
        {"file": ("big.bmp", image_bytes("BMP", size=(300, 300)), "image/bmp")},
        413,
        "file_too_large",
    ),
]


@pytest.mark.parametrize("name,files,status,code", CASES, ids=[c[0] for c in CASES])
def test_bad_upload_gets_json_error_and_server_keeps_serving(client, name, files, status, code):
    r = client.post("/predict", files=files)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    ok = client.post("/predict", files={"file": ("ok.png", image_bytes(), "image/png")})
    assert ok.status_code == 200


def test_missing_field_is_422(client):
    r = client.post("/predict", data={"something": "else"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "missing_file"


def test_text_in_file_field_is_422(client):
    r = client.post("/predict", data={"file": "not a file"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_file"
    assert client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")}).is_success


def test_malformed_multipart_is_400(client):
    r = client.post(
        "/predict",
        content=b"--zzz\r\nno headers, no end",
        headers={"content-type": "multipart/form-data; boundary=zzz"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart"
    assert client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")}).is_success


def test_not_multipart_is_422(client):
    r = client.post("/predict", json={"file": "x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_file"


def test_text_in_files_is_ignored_like_swagger_sends_it(client):
    r = client.post(
        "/predict", files={"file": ("a.png", image_bytes(), "image/png")}, data={"files": "string"}
    )
    assert r.status_code == 200 and r.json()["label"]
    only_text = client.post("/predict", data={"files": "string"})
    assert only_text.status_code == 422 and only_text.json()["error"]["code"] == "missing_file"


def test_too_many_files_is_413(client):
    files = [("files", (f"{i}.png", image_bytes(), "image/png")) for i in range(5)]
    r = client.post("/predict", files=files)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_files"


def test_declared_body_over_the_request_cap_is_refused_before_reading(client):
    cap = client.app.state.settings.max_request_bytes
    r = client.post(
        "/predict",
        content=b"x" * 10,
        headers={
            "content-type": "multipart/form-data; boundary=zzz",
            "content-length": str(cap + 1),
        },
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_streamed_body_over_the_cap_is_cut_off_while_reading(client):
    cap = client.app.state.settings.max_request_bytes

    def chunks():
        for _ in range(cap // 65536 + 2):
            yield b"0" * 65536

    r = client.post(
        "/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zzz"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_unknown_route_and_method_are_json(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
