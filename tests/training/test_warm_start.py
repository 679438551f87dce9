"""``init_from``: a run starts from an exported version's (or a run's) weights, all of them."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.helpers import tiny_config
from training.config import ConfigError
from training.export import describe_weights_source, export_saved_model
from training.model import build_classifier, wrap_for_input
from training.run import load_run_classifier, load_run_model
from training.train import train
from training.warm_start import load_initial_weights

pytestmark = pytest.mark.slow

X = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The tiny run exported as ``export`` writes a version (the contract graph)."""
    path = tmp_path_factory.mktemp("version") / "1"
    model, _ = load_run_model(trained_run)
    export_saved_model(model, path)
    return path


def test_a_saved_model_and_a_run_give_back_every_weight(trained_run, exported):
    source, _ = load_run_classifier(trained_run)
    expected = source.predict_on_batch(X)
    for where in (exported, trained_run, trained_run / "model.weights.h5"):
        keras.utils.set_random_seed(11)  # a different random init than the run's
        fresh = build_classifier("none", 0.2, zero_init_residual=True)
        before = fresh.predict_on_batch(X)
        assert not np.allclose(before, expected, atol=1e-3)
        load_initial_weights(fresh, where)
        np.testing.assert_allclose(fresh.predict_on_batch(X), expected, atol=1e-5)
        for mine, theirs in zip(fresh.weights, source.weights, strict=True):  # BN stats too
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_another_architecture_or_a_non_model_is_refused_by_name(exported, tmp_path):
    cifar = build_classifier("none", 0.2, stem="cifar")
    with pytest.raises(ConfigError, match="different architecture.*check the stem"):
        load_initial_weights(cifar, exported)
    with pytest.raises(ConfigError, match="init_from needs an exported version"):
        load_initial_weights(cifar, tmp_path)
    with pytest.raises(ConfigError, match="one of the two"):
        tiny_config(tmp_path, tmp_path, init_from=str(exported), weights="imagenet").validate()


def test_training_starts_from_the_given_weights(trained_run, exported, cifar_dir, tmp_path):
    source, _ = load_run_classifier(trained_run)
    wanted = {v.path: np.asarray(v) for v in source.weights}

    class FirstWeights(keras.callbacks.Callback):
        seen: dict = {}

        def on_train_begin(self, logs=None):
            FirstWeights.seen = {v.path: np.asarray(v) for v in self.model.weights}

    train(
        tiny_config(cifar_dir, tmp_path / "ft", init_from=str(exported)), callbacks=[FirstWeights()]
    )
    assert FirstWeights.seen.keys() == wanted.keys()
    for path, value in wanted.items():
        np.testing.assert_array_equal(FirstWeights.seen[path], value, err_msg=path)


def test_the_card_says_what_a_fine_tuned_model_started_from(tmp_path):
    version = tmp_path / "models" / "c10" / "3"
    version.mkdir(parents=True)
    cfg = tiny_config(tmp_path, tmp_path)
    assert describe_weights_source(cfg) == "none (random initialization)"
    cfg.init_from = str(version)
    assert describe_weights_source(cfg) == f"fine-tuned from {version}"  # no card to read
    card = {"name": "c10", "version": 3, "weights_source": "none (random initialization)"}
    (version / "model_card.json").write_text(json.dumps(card))
    assert describe_weights_source(cfg) == (
        f"fine-tuned from c10 version 3 ({version}), itself trained from random initialization"
    )
    card["weights_source"] = "imagenet"
    (version / "model_card.json").write_text(json.dumps(card))
    assert describe_weights_source(cfg).endswith("whose weights came from: imagenet")


def test_the_cifar_full_stem_takes_the_cifar_stems_weights_at_twice_the_map_size(tmp_path):
    """The stem without its max-pool (issue 39, step A) loads a CIFAR-stem version's weights
    unchanged, name for name, and its stage 2 works on 32x32 maps instead of 16x16."""
    keras.utils.set_random_seed(5)
    source = build_classifier("none", 0.2, stem="cifar", zero_init_residual=False)
    export_saved_model(wrap_for_input(source, 32), tmp_path / "1")
    full = build_classifier("none", 0.2, stem="cifar-full")
    load_initial_weights(full, tmp_path / "1")
    for a, b in zip(source.weights, full.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for model, side in ((source, 16), (full, 32)):
        backbone = model.get_layer("resnet50")
        stage2 = keras.Model(backbone.input, backbone.get_layer("conv2_block3_out").output)
        assert stage2.predict_on_batch(X[:1]).shape == (1, side, side, 256)
    assert not np.allclose(full.predict_on_batch(X), source.predict_on_batch(X), atol=1e-3)
