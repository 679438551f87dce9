from __future__ import annotations

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests.helpers import export_tiny_model, write_cifar_dir  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-budget",
        type=float,
        default=float(os.environ.get("FUZZ_BUDGET_S", "0")),
        help="seconds the hostile schema fuzzer searches, coverage phase included from 300 "
        "(env FUZZ_BUDGET_S; 0: a fixed number of examples, no coverage phase)",
    )


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    """A generated CIFAR-10 in the official layout: 5 x 20 training and 20 test images."""
    return write_cifar_dir(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory):
    """``MODELS/tiny/1``: a tiny SavedModel with the real contract and card."""
    models = tmp_path_factory.mktemp("models")
    export_tiny_model(models)
    return models / "tiny"


# The test process's own collector threshold, before any served app set a server's
THRESHOLD = gc.get_threshold()


@pytest.fixture(autouse=True)
def _collector_as_it_was():
    """A served app sets the cyclic collector's threshold for a server (``app.memory``, once
    warmed up, also by an app a module's tests share); each test leaves the test process's own
    threshold behind."""
    yield
    gc.set_threshold(*THRESHOLD)
