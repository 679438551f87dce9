"""What a browser gets from the server (issue 43): the model card as a page with its files,
the demo page's configuration, samples and icon, HEAD on GET routes, Swagger's view of
``/predict``, a browser's "no file chosen", and SVG answered as an unsupported format. The pages
themselves run in Chromium in ``tests/e2e/test_browser.py``."""

from __future__ import annotations

import io
import json
import re
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.routes.model import preferred
from app.main import create_app
from app.web.card_page import read_card
from tests.helpers import ROOT, huge_png, image_bytes, make_settings, wait_ready

CARD = """---
license: apache-2.0
library_name: keras
tags:
- image-classification
- tiny
model-index:
- name: tiny
  results:
  - metrics:
    - type: accuracy
      value: 12.5
      name: Test accuracy (%)
---

# tiny, version 1

See [the JSON card](model_card.json), [the licence](../../../LICENSE),
[the docs](https://example.org/docs), [notes](notes.txt) and ![away](escape.png).

<script>alert("raw html")</script>

| split | accuracy |
| --- | --- |
| test | 12.5 % |

![curves](curves.png)
"""


@pytest.fixture(scope="module")
def carded_root(tiny_model_root, tmp_path_factory):
    """The tiny model with a README card that links to a figure, the JSON card, a file of the
    repository and a web page; a file the card does not name sits beside them."""
    root = tmp_path_factory.mktemp("carded") / "tiny"
    shutil.copytree(tiny_model_root, root)
    version = root / "1"
    (version / "README.md").write_text(CARD)
    Image.new("RGB", (40, 20), (10, 100, 200)).save(version / "curves.png")
    (version / "secret.txt").write_text("not linked")
    (version / "notes.txt").write_text("linked, but not a figure: /home/alice/notes")
    (version / "escape.png").symlink_to(version.parent.parent / "outside.png")
    Image.new("RGB", (4, 4)).save(version.parent.parent / "outside.png")
    card = json.loads((version / "model_card.json").read_text())
    card["data"] = {"source": "/var/tmp/cifar10-data/cifar-10-batches-py"}
    card["not_sure_below"] = 0.3
    (version / "model_card.json").write_text(json.dumps(card))
    return root


@pytest.fixture(scope="module")
def web(carded_root):
    app = create_app(make_settings(carded_root, default_top_k=4))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


@pytest.mark.parametrize(
    "accept, expected",
    [
        ("", "text/markdown"),
        ("*/*", "text/markdown"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html"),
        ("text/markdown", "text/markdown"),
        ("text/html;q=0.5, text/markdown", "text/markdown"),
        ("text/*", "text/markdown"),
        ("text/html;q=0, */*", "text/markdown"),
        ("application/json", "text/markdown"),
        ("text/html;q=bad", "text/markdown"),
        ("text/*;q=1, text/markdown;q=0", "text/html"),  # markdown refused by name
        ("*/*;q=0.8, text/markdown;q=0.5", "text/html"),
        ("TEXT/HTML", "text/html"),
        ("text/html;q=nan, */*", "text/markdown"),
    ],
)
def test_preferred_type_follows_the_accept_header(accept, expected):
    assert preferred(accept, ("text/markdown", "text/html")) == expected


def test_model_card_is_a_page_for_browsers_and_markdown_for_programs(web):
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = web.get("/model/card", headers={"Accept": browser_accept})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["vary"] == "Accept"
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src 'self'" in csp  # no script, nothing from afar
    text = page.text
    assert 'href="card?format=markdown"' in text  # the Markdown link, whatever the Accept
    assert '<img alt="away"' in text and "escape.png" not in text.split("<main>")[1]
    assert "<h1>tiny, version 1</h1>" in text
    assert '<img src="files/curves.png" alt="curves"' in text
    assert 'href="files/model_card.json"' in text
    assert 'href="https://example.org/docs"' in text
    # the repository's file is not served here: shown, not linked
    assert 'href="../../../LICENSE"' not in text and "in the repository that trained" in text
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text  # raw HTML escaped
    assert "<table" in text and "<td>12.5 %</td>" in text  # the Markdown table
    # the front matter as a small table, not as text
    assert re.search(r"<th>license</th><td>apache-2.0</td>", text)
    assert re.search(r"<th>Test accuracy \(%\)</th><td>12.5</td>", text)
    assert "library_name:" not in text
    markdown = web.get("/model/card")
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text == CARD and markdown.headers["vary"] == "Accept"
    forced = web.get("/model/card?format=html", headers={"Accept": "text/markdown"})
    assert forced.headers["content-type"].startswith("text/html")
    bad = web.get("/model/card?format=pdf")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_card_files_are_only_those_the_card_names(web):
    png = web.get("/model/files/curves.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (40, 20)
    card = web.get("/model/files/model_card.json")
    assert card.status_code == 200 and card.json()["data"]["source"] == "cifar-10-batches-py"
    assert png.headers["x-content-type-options"] == "nosniff"
    # linked but not a figure (notes.txt), linked but leading out of the folder (escape.png, a
    # symlink), present but not linked, or no file at all: none of them
    for name in ("notes.txt", "escape.png", "secret.txt", "saved_model.pb", "README.md", "LICENSE"):
        r = web.get(f"/model/files/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", name


def test_the_shipped_cards_link_only_to_files_they_ship():
    for readme in sorted((ROOT / "models").glob("*/*/README.md")):
        card = read_card(readme.read_text(), readme.parent)
        figures = set(re.findall(r"!\[[^\]]*\]\(([^)/]+)\)", card.body))
        assert figures and figures <= set(card.files), (readme, figures - set(card.files))
        assert "model_card.json" in card.files


def test_demo_page_carries_the_limits_and_the_cards_threshold(web, carded_root):
    page = web.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    raw = re.search(r'<script id="config" type="application/json">(.*?)</script>', page.text)
    config = json.loads(raw.group(1))
    settings = web.app.state.settings
    assert config["max_upload_bytes"] == settings.max_upload_bytes
    assert config["max_image_pixels"] == settings.max_image_pixels
    assert config["default_top_k"] == 4
    assert config["not_sure_below"] == 0.3 and config["not_sure_source"] == "set by the model card"
    assert (
        "image/png" in config["accepted_types"] and "image/svg+xml" not in config["accepted_types"]
    )
    assert config["samples"] == sorted(p.name for p in (ROOT / "samples").glob("*.png"))
    assert len(config["samples"]) == 10


def test_samples_and_icon_are_served(web):
    for name in sorted(p.name for p in (ROOT / "samples").glob("*.png")):
        r = web.get(f"/samples/{name}")
        assert r.status_code == 200 and r.content == (ROOT / "samples" / name).read_bytes()
    assert web.get("/samples/../README.md").status_code == 404
    missing = web.get("/samples/nothing.png")
    assert missing.status_code == 404 and "ship.png" in missing.json()["error"]["message"]
    icon = web.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert Image.open(io.BytesIO(icon.content)).format == "ICO"


@pytest.mark.parametrize(
    "path", ["/", "/health", "/health/ready", "/model", "/model/card", "/metrics", "/favicon.ico"]
)
def test_head_answers_every_get_route_without_a_body(web, path):
    get, head = web.get(path), web.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if path not in ("/metrics", "/model"):  # (these change between the two requests)
        assert head.headers["content-length"] == str(len(get.content))


def test_head_on_a_post_route_is_405_with_allow(web):
    r = web.head("/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.content == b""


def test_swagger_sees_file_pickers_and_the_real_top_k_default(web):
    operation = web.get("/openapi.json").json()["paths"]["/predict"]["post"]
    (top_k,) = [p for p in operation["parameters"] if p["name"] == "top_k"]
    assert top_k["schema"]["default"] == 4  # the server's CIFAR10_DEFAULT_TOP_K
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert schema["properties"]["files"]["items"]["format"] == "binary"
    assert schema["properties"]["files"]["default"] == []
    assert "cat.png" not in web.get("/openapi.json").text
    assert "samples/ship.png" in web.get("/openapi.json").json()["info"]["description"]


@pytest.mark.parametrize("filename", ["", "blob"])
def test_a_browsers_no_file_chosen_is_missing_file(web, filename):
    """An HTML form sends an empty part with an empty file name for a file field left empty;
    Swagger UI an empty Blob, which browsers name "blob"."""
    r = web.post(
        "/predict",
        files=[("file", (filename, b"", "image/*")), ("files", (None, b""))],
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_file", r.text
    # beside a real file it is ignored
    r = web.post(
        "/predict",
        files=[
            ("file", (filename, b"", "image/*")),
            ("files", ("a.png", image_bytes(), "image/png")),
        ],
    )
    assert r.status_code == 200 and len(r.json()["results"]) == 1


def test_an_empty_file_with_a_name_is_still_empty_file(web):
    r = web.post("/predict", files={"file": ("empty.png", b"", "image/png")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file"


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32


@pytest.mark.parametrize(
    "data, content_type, name",
    [
        (SVG, "image/svg+xml", "SVG"),
        (SVG, "application/octet-stream", "SVG"),
        (HEIC, "image/heic", "HEIC"),
    ],
)
def test_svg_and_heic_are_unsupported_formats_not_bad_images(web, data, content_type, name):
    r = web.post("/predict", files={"file": ("x", data, content_type)})
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "unsupported_image_type"
    assert f"{name} images are not supported" in r.json()["error"]["message"]
    raw = web.post("/predict", content=data, headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 415


def test_limits_are_stated_in_readable_units(web):
    too_big = b"\x89PNG" + b"\x00" * web.app.state.settings.max_upload_bytes
    r = web.post("/predict", files={"file": ("big.png", too_big, "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert "limit of 10 MiB (10,485,760 bytes)" in r.json()["error"]["message"]
    r = web.post("/predict", files={"file": ("wide.png", huge_png(8000, 6000), "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    message = r.json()["error"]["message"]
    assert "8000x6000 is 48,000,000 pixels, over the limit of 40,000,000 (40 megapixels)" in message


def test_card_page_survives_crlf_and_odd_front_matter(tiny_model_root, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_root, root)
    odd = "---\r\nlicense: mit\r\nmodel-index:\r\n- results:\r\n  - x\r\n- 3\r\n---\r\n# odd\r\n"
    (root / "1" / "README.md").write_bytes(odd.encode())
    with TestClient(create_app(make_settings(root))) as c:
        wait_ready(c)
        page = c.get("/model/card?format=html")
    assert page.status_code == 200, page.text
    assert "<th>license</th><td>mit</td>" in page.text and "<h1>odd</h1>" in page.text
    assert "model-index" not in page.text  # the front matter is the table, not text


def test_head_is_counted_under_its_route(web):
    web.head("/health")
    metrics = web.get("/metrics").text
    assert 'http_requests_total{method="HEAD",route="/health",status="200"}' in metrics
    assert 'method="HEAD",route="unmatched"' not in metrics


def test_an_empty_text_field_is_still_text_not_a_missing_file(web):
    r = web.post("/predict", files=[("file", (None, b""))])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_file", r.text


def test_with_api_keys_the_demo_stays_open_and_says_the_card_needs_one(carded_root):
    with TestClient(create_app(make_settings(carded_root, api_keys="k-one"))) as c:
        wait_ready(c)
        page = c.get("/")
        assert page.status_code == 200
        raw = re.search(r'<script id="config" type="application/json">(.*?)</script>', page.text)
        assert json.loads(raw.group(1))["keys_required"] is True
        assert c.get("/model/card?format=html").status_code == 401
        assert c.get("/model/files/curves.png").status_code == 401
        shown = c.get("/model/files/curves.png", headers={"X-API-Key": "k-one"})
        assert shown.status_code == 200
        assert c.get("/samples/ship.png").status_code == 200 and c.get("/redoc").status_code == 200


def test_a_threshold_the_card_cannot_mean_is_ignored(tiny_model_root, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_root, root)
    for bad in ("0.6", 60, 0, True):
        card = json.loads((root / "1" / "model_card.json").read_text())
        card["not_sure_below"] = bad
        (root / "1" / "model_card.json").write_text(json.dumps(card))
        with TestClient(create_app(make_settings(root))) as c:
            wait_ready(c)
            raw = re.search(r'type="application/json">(.*?)</script>', c.get("/").text)
        config = json.loads(raw.group(1))
        assert config["not_sure_below"] == 0.5, bad
        assert config["not_sure_source"] == "this page's default"
