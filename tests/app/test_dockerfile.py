"""The Dockerfile, .dockerignore and docker-compose.yml read as text: the cheap check that runs
everywhere. The image itself is built, run, stopped and composed in ``tests/e2e/
test_container.py`` where podman is (CI requires it)."""

from __future__ import annotations

import fnmatch
import re
import shlex

import yaml

from app.graceful import IDLE_GRACE_S
from app.main import create_app
from tests.helpers import ROOT, make_settings


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _sent_to_the_build(path: str) -> bool:
    """Whether ``.dockerignore`` lets ``path`` (relative to the repository) into the build
    context: the last pattern that matches it or a folder above it decides."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            included = negated
    return included


def test_base_image_is_a_build_argument_defaulting_to_the_official_one():
    steps = _instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")
    assert steps[1] == ("FROM", "${BASE_IMAGE}")
    assert [op for op, _ in steps].count("FROM") == 1


def test_runs_as_uid_10001_with_nothing_of_its_own_to_write():
    steps = _instructions()
    assert any("useradd" in rest and "--uid 10001" in rest for op, rest in steps if op == "RUN")
    users = [rest for op, rest in steps if op == "USER"]
    assert users == ["appuser"]
    # Nothing copied is handed to that user: /app stays root's (test_container checks it).
    assert not [rest for op, rest in steps if op == "COPY" and "--chown" in rest]
    assert steps[-1][0] == "CMD" and steps.index(("USER", "appuser")) > max(
        i for i, (op, _) in enumerate(steps) if op in ("RUN", "COPY")
    )


def test_what_is_copied_is_in_the_build_context_and_the_rest_is_not():
    sources = []
    for op, rest in _instructions():
        if op == "COPY":
            *srcs, _ = [p for p in shlex.split(rest) if not p.startswith("--")]
            sources += srcs
    assert sources, "the Dockerfile copies nothing?"
    for src in sources:
        assert (ROOT / src).exists(), src
        assert _sent_to_the_build(src), f"{src} is excluded by .dockerignore"
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/helpers.py", "training/train.py"):
        assert not _sent_to_the_build(heavy), f"{heavy} would be sent to the build"
    assert not _sent_to_the_build("app/__pycache__/main.cpython-311.pyc")


def test_health_checks_ask_a_route_the_app_serves(tiny_model_root):
    paths = set(create_app(make_settings(tiny_model_root)).openapi()["paths"])
    health = next(rest for op, rest in _instructions() if op == "HEALTHCHECK")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_check = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    for check in (health, compose_check):
        (path,) = re.findall(r"127\.0\.0\.1:[^/]*(/[\w/]+)", check)
        assert path == "/health/ready" and path in paths


def test_compose_images_and_ports_can_be_overridden_with_upstream_defaults():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api, prometheus = compose["services"]["api"], compose["services"]["prometheus"]
    assert api["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim-bookworm}"
    assert api["image"] == "${API_IMAGE:-cifar10-api:latest}"
    assert prometheus["image"] == "${PROMETHEUS_IMAGE:-prom/prometheus:v3.1.0}"
    assert api["ports"] == ["${API_PORT:-8000}:8000"]
    assert prometheus["ports"] == ["${PROMETHEUS_PORT:-9090}:9090"]
    # The stop grace covers the server's own drain: the idle connections' grace, then the
    # requests in flight.
    grace = int(api["stop_grace_period"].removesuffix("s"))
    drain = make_settings(ROOT / "models" / "cifar10-resnet50").shutdown_timeout_s + IDLE_GRACE_S
    assert grace > drain
