from __future__ import annotations

import keras
import pytest

from training.config import TrainConfig
from training.train import train


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def tiny_config(cifar_dir, run_dir, **overrides) -> TrainConfig:
    """A few steps of the real ResNet50 at 32 px on the generated data."""
    values = dict(
        data=str(cifar_dir),
        run_dir=str(run_dir),
        internal_size=32,
        epochs=1,
        batch_size=16,
        val_fraction=0.2,
        learning_rate=0.01,
        warmup_epochs=0,
        verbose=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


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
