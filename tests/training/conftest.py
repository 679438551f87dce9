from __future__ import annotations

import keras
import pytest

from tests.helpers import tiny_config
from training.train import train


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def trained_run(cifar_dir, tmp_path_factory):
    """One finished tiny run, shared by the export and evaluation tests."""
    run_dir = tmp_path_factory.mktemp("run")
    keras.mixed_precision.set_global_policy("float32")
    train(tiny_config(cifar_dir, run_dir))
    return run_dir


@pytest.fixture(scope="session")
def local_backbone_weights(tmp_path_factory):
    """A local backbone weights file, as a user with a downloaded .h5 would pass."""
    path = tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5"
    keras.utils.set_random_seed(7)
    keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(None, None, 3)
    ).save_weights(path)
    return path
