"""The OpenAPI document against the routes (issue 42): every operation has its row in
``RESPONSES``, every error it lists carries an example that the error's own schema accepts,
FastAPI's validation shape is not what the document promises, and an output asked for twice is
refused as Triton refuses it. (The fuzzer checks the document against the running server:
``tests/e2e/test_fuzz.py``.)"""

from __future__ import annotations

import base64

import jsonschema
import pytest

from app.api.openapi import RESPONSES
from tests.helpers import image_bytes


@pytest.fixture(scope="module")
def document(client):
    return client.get("/openapi.json").json()


def _operations(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


def test_every_operation_has_its_statuses_listed(document):
    operations = {(m, p) for m, p, _ in _operations(document)}
    assert operations == set(RESPONSES)
    for method, path, operation in _operations(document):
        listed = {s for s in operation["responses"] if s != "200"}
        assert listed == set(RESPONSES[(method, path)]), (method, path)


def _resolve(schema: dict, document: dict) -> dict:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_every_error_body_has_an_example_its_schema_accepts(document):
    checked = 0
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            body = response.get("content", {}).get("application/json")
            assert body is not None, (method, path, status)
            schema = _resolve(body["schema"], document)
            if schema.get("title") not in ("ErrorResponse", "ProtocolError"):
                continue  # a readiness check's 503 is its 200's body, not an error shape
            assert "example" in body, (method, path, status)
            jsonschema.validate(body["example"], {**schema, "components": document["components"]})
            protocol = path.startswith(("/v1", "/v2"))
            assert isinstance(body["example"]["error"], str) == protocol, (path, status)
            checked += 1
    assert checked > 60


def test_no_operation_promises_fastapis_validation_shape(client, document):
    text = str(document["paths"])
    assert "HTTPValidationError" not in text
    r = client.get("/model/card?format=pdf")
    assert r.status_code == 422 and set(r.json()) == {"error"}
    assert set(r.json()["error"]) == {"code", "message"}


def test_what_the_schema_cannot_say_about_image_bytes_is_said_in_words(client, document):
    settings = client.app.state.settings
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]["properties"]
    for description in (
        form["file"]["description"],
        body["image/*"]["schema"]["description"],
        body["application/octet-stream"]["schema"]["description"],
    ):
        assert "JPEG, PNG, WebP, GIF, BMP or TIFF" in description
        assert f"{settings.max_upload_bytes:,} bytes" in description  # the server's own value
        assert f"{settings.max_image_pixels:,} pixels" in description
        assert "415" in description and "invalid_image" in description


def test_an_output_asked_for_twice_is_refused_by_the_schema_as_by_the_server(client, document):
    """The schema itself says each output name at most once (whatever the parameters), so a
    client generator or a fuzzer sees what the server refuses."""
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert "twice is refused with 400" in body["properties"]["outputs"]["description"]
    validator = jsonschema.Draft202012Validator({**body, "components": document["components"]})
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES"}
    tensor["data"] = [base64.b64encode(image_bytes()).decode()]
    twice = [{"name": "labels"}, {"name": "labels", "parameters": {"binary_data": True}}]
    for outputs, accepted in (
        ([{"name": "labels"}, {"name": "probabilities"}], True),
        ([{"name": "probabilities"}], True),
        (twice, False),
        ([{"name": "probabilities"}] * 2, False),
    ):
        request = {"inputs": [tensor], "outputs": outputs}
        assert validator.is_valid(request) is accepted, outputs
        answer = client.post("/v2/models/tiny/infer", json=request)
        assert (answer.status_code == 200) is accepted, answer.text
        if not accepted:
            name = outputs[0]["name"]
            assert answer.json() == {"error": f"output '{name}' already exists in request"}


def test_a_get_with_a_body_is_answered_as_documented_not_by_the_body_limits(client):
    """GET routes read no body, so the body limits leave them alone: a GET carrying more than
    the request cap gets its route's documented answer, not an undocumented 413."""
    cap = client.app.state.settings.max_request_bytes
    for path in ("/health", "/model", "/v2"):
        r = client.request("GET", path, content=b"x" * (cap + 1))
        assert r.status_code == 200, (path, r.status_code)
    r = client.request(
        "POST", "/predict", content=b"x" * (cap + 1), headers={"content-type": "image/png"}
    )
    assert r.status_code == 413  # where a body is read, the cap holds


def test_every_json_answer_has_a_schema_and_the_protocols_answers_match_theirs(client, document):
    import base64

    from tests.helpers import image_bytes

    for method, path, operation in _operations(document):
        body = operation["responses"]["200"].get("content", {}).get("application/json")
        if body is not None:
            assert body.get("schema"), (method, path)

    def schema_of(method: str, path: str) -> dict:
        content = document["paths"][path][method]["responses"]["200"]["content"]
        return {**content["application/json"]["schema"], "components": document["components"]}

    b64 = base64.b64encode(image_bytes()).decode()
    oip = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
    answers = [
        ("get", "/v2/health/live", client.get("/v2/health/live")),
        ("get", "/v2/health/ready", client.get("/v2/health/ready")),
        ("get", "/v2/models/{name}", client.get("/v2/models/tiny")),
        (
            "get",
            "/v2/models/{name}/versions/{version}/ready",
            client.get("/v2/models/tiny/versions/1/ready"),
        ),
        ("post", "/v2/models/{name}/infer", client.post("/v2/models/tiny/infer", json=oip)),
        (
            "post",
            "/v2/models/{name}/infer",
            client.post(
                "/v2/models/tiny/infer",
                json={**oip, "id": "x", "outputs": [{"name": "labels"}, {"name": "probabilities"}]},
            ),
        ),
        ("get", "/v1/models/{name}", client.get("/v1/models/tiny")),
        ("get", "/v1/models/{name}/metadata", client.get("/v1/models/tiny/metadata")),
        (
            "post",
            "/v1/models/{name}:predict",
            client.post("/v1/models/tiny:predict", json={"instances": [{"b64": b64}]}),
        ),
        (
            "post",
            "/v1/models/{name}:predict",
            client.post("/v1/models/tiny:predict", json={"inputs": {"image": [{"b64": b64}]}}),
        ),
    ]
    for method, path, answer in answers:
        assert answer.status_code == 200, (path, answer.text)
        jsonschema.validate(answer.json(), schema_of(method, path))


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'
# (method, document path, status) -> the request that provokes it on the tiny model's server
# (``{big}`` bytes: one over the per-file limit). The rarer statuses are compared where their
# own tests provoke them: 408 in test_memory_bounds, 500 in test_safety_net, 503 and 504 in
# test_operations and test_batcher_faults.
PROVOKED = (400, 404, 413, 415, 422)


def _provoke(client, method: str, path: str, status: int):
    """Send the request that makes ``method path`` answer ``status`` (None: no such request
    here, e.g. a card's 404 needs a version without README.md)."""
    big = b"x" * (client.app.state.settings.max_upload_bytes + 1)
    wrong = status == 404
    url = path.replace("{name}", "resnet" if wrong else "tiny").replace("{version}", "1")
    if path == "/model/files/{name}":
        return client.get("/model/files/nope.png") if status == 404 else None
    if path == "/model/card":
        return client.get("/model/card?format=pdf") if status == 422 else None
    if method == "get":
        return client.get(url) if wrong else None
    payload = {400: b"hello", 404: image_bytes(), 413: big, 415: SVG}.get(status)
    if path == "/predict":
        name = {400: "photo.jpg", 413: "big.png", 415: "logo.svg"}.get(status, "x.png")
        kind = "image/svg+xml" if status == 415 else "image/png"
        field = "other" if status == 422 else "file"
        return client.post(url, files={field: (name, payload or b"x", kind)})
    encoded = base64.b64encode(payload).decode()
    if path.endswith("/infer"):
        tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}
        return client.post(url, json={"inputs": [tensor]})
    return client.post(url, json={"instances": [{"b64": encoded}]})


def test_every_error_example_is_the_servers_answer_on_its_path(client, document):
    """Each example the document shows for a 400, 404, 413, 415 or 422 is, word for word, what
    the server answers on that path (the served model's name, version and limits in it)."""
    compared, shown = set(), set()
    for method, path, operation in _operations(document):
        for status in operation["responses"]:
            body = operation["responses"][status].get("content", {}).get("application/json", {})
            if "example" not in body or int(status) not in PROVOKED:
                continue
            shown.add((method, path, status))
            answer = _provoke(client, method, path, int(status))
            if answer is None:
                continue
            assert answer.status_code == int(status), (method, path, answer.text)
            assert answer.json() == body["example"], (method, path, status)
            compared.add((method, path, status))
    # all but the card's 404 (compared in test_operations, on a version without README.md)
    assert compared == shown - {("get", "/model/card", "404")}
    assert len(compared) == 30
