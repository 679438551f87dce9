"""The model contract: uint8 in, float32 probabilities out, preprocessing inside; freezing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.config import ConfigError
from training.model import (
    backbone_of,
    build_classifier,
    resnet50_cifar_stem,
    resolve_weights,
    set_backbone_trainable,
    wrap_for_input,
)

pytestmark = pytest.mark.slow


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_contract_uint8_in_probabilities_out():
    model = wrap_for_input(build_classifier(), 40)
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape) == (None, 32, 32, 3)
    probs = np.asarray(model.predict_on_batch(_images()))
    assert probs.dtype == np.float32 and probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    resize = model.get_layer("resize_40")
    assert tuple(resize.compute_output_shape((None, 32, 32, 3))) == (None, 40, 40, 3)


def test_mixed_precision_keeps_float32_probabilities():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = wrap_for_input(build_classifier(), 32)
    assert (
        model.get_layer("resnet50_cifar10").get_layer("probs").dtype_policy.compute_dtype
        == "float32"
    )
    probs = np.asarray(model.predict_on_batch(_images()))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)


def test_test_time_flip_is_mirror_invariant_and_shares_weights():
    classifier = build_classifier()
    plain, flipped = wrap_for_input(classifier, 32), wrap_for_input(classifier, 32, tta_flip=True)
    x = _images()
    mirrored = x[:, :, ::-1]
    np.testing.assert_allclose(
        flipped.predict_on_batch(x), flipped.predict_on_batch(mirrored), atol=1e-5
    )
    expected = (plain.predict_on_batch(x) + plain.predict_on_batch(mirrored)) / 2
    np.testing.assert_allclose(flipped.predict_on_batch(x), expected, atol=1e-5)


def _moved(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` moved by (dy, dx) pixels, the uncovered border black."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


@pytest.mark.parametrize("size", [32, 40])
def test_test_time_translate_averages_the_moved_copies(size):
    """Half the weight on the flip average of the image, a quarter on each of the two copies
    moved by 2 pixels along the diagonal (black border), at any internal size."""
    classifier = build_classifier()
    flipped = wrap_for_input(classifier, size, tta_flip=True)
    translated = wrap_for_input(classifier, size, tta_flip=True, tta_translate=2)
    x = _images()
    down_right, up_left = _moved(x, 2, 2), _moved(x, -2, -2)
    assert not np.array_equal(down_right, x)
    expected = (
        flipped.predict_on_batch(x) / 2
        + (flipped.predict_on_batch(down_right) + flipped.predict_on_batch(up_left)) / 4
    )
    got = translated.predict_on_batch(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, flipped.predict_on_batch(x), atol=1e-4)  # the copies count
    assert len(translated.weights) == len(classifier.weights)  # one network for all six copies


def test_test_time_copies_go_through_the_network_as_one_batch():
    """The six copies are stacked on the batch axis and the network is called once (a lone
    image's passes then fill the cores), with the same result as one call per copy."""
    classifier = build_classifier()
    before = len(classifier._inbound_nodes)  # Keras' record of the symbolic calls of a layer
    translated = wrap_for_input(classifier, 32, tta_flip=True, tta_translate=1)
    assert len(classifier._inbound_nodes) == before + 1
    x = _images()
    plain = wrap_for_input(classifier, 32)
    copies = [x, _moved(x, 1, 1), _moved(x, -1, -1)]
    copies += [c[:, :, ::-1] for c in copies]
    weights = [1 / 4, 1 / 8, 1 / 8] * 2
    expected = sum(w * plain.predict_on_batch(c) for w, c in zip(weights, copies, strict=True))
    np.testing.assert_allclose(translated.predict_on_batch(x), expected, atol=1e-5)


def test_test_time_translate_needs_the_flip():
    with pytest.raises(ConfigError, match="needs the flip"):
        wrap_for_input(build_classifier(), 32, tta_translate=1)


def test_head_phase_really_freezes_the_backbone(local_backbone_weights):
    classifier = build_classifier(str(local_backbone_weights))
    backbone = backbone_of(classifier)
    assert not backbone.trainable
    model = wrap_for_input(classifier, 32)
    model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
    before_backbone = [np.array(w) for w in backbone.weights]  # BN moving stats included
    before_head = [np.array(w) for w in classifier.get_layer("probs").weights]
    y = np.eye(10, dtype=np.float32)[[1, 2, 3]]
    model.train_on_batch(_images(), y)
    for b, a in zip(before_backbone, backbone.weights, strict=True):
        np.testing.assert_array_equal(b, np.array(a))
    assert any(
        not np.allclose(b, np.array(a))
        for b, a in zip(before_head, classifier.get_layer("probs").weights, strict=True)
    )


def test_finetune_unfreezes_top_stages_but_not_batchnorm(local_backbone_weights):
    classifier = build_classifier(str(local_backbone_weights))
    set_backbone_trainable(classifier, stages=1)
    layers = backbone_of(classifier).layers
    conv5 = [layer for layer in layers if layer.name.startswith("conv5_") and layer.weights]
    assert any(layer.trainable for layer in conv5)
    assert not any(layer.trainable for layer in layers if layer.name.startswith("conv4_"))
    assert not any(
        layer.trainable for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_weights_option_validation(tmp_path):
    assert resolve_weights("none") is None
    assert resolve_weights("imagenet") == "imagenet"
    with pytest.raises(FileNotFoundError, match="backbone weights file not found"):
        resolve_weights(str(tmp_path / "missing.h5"))


def test_zero_init_residual_starts_blocks_as_identity_only_from_random_init(local_backbone_weights):
    fresh = backbone_of(build_classifier(zero_init_residual=True))
    last_bns = [layer for layer in fresh.layers if layer.name.endswith("_3_bn")]
    assert len(last_bns) == 16  # one per bottleneck block of ResNet50
    assert all(not np.any(np.array(layer.gamma)) for layer in last_bns)
    assert np.all(np.array(fresh.get_layer("conv2_block1_1_bn").gamma) == 1)
    pretrained = backbone_of(build_classifier(str(local_backbone_weights), zero_init_residual=True))
    assert np.all(np.array(pretrained.get_layer("conv2_block1_3_bn").gamma) == 1)


def test_cifar_stem_reaches_the_stock_stems_maps_from_32_px_at_about_its_size():
    stock = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    cifar = resnet50_cifar_stem()
    stage2 = "conv2_block1_1_conv"
    at = {
        name: keras.Model(m.inputs, m.get_layer(stage2).output)
        for name, m in (("stock", stock), ("cifar", cifar))
    }
    x64, x32 = np.zeros((1, 64, 64, 3), "float32"), np.zeros((1, 32, 32, 3), "float32")
    assert tuple(at["stock"](x64).shape) == tuple(at["cifar"](x32).shape) == (1, 16, 16, 64)
    assert cifar.get_layer("conv1_conv").kernel_size == (3, 3)
    assert cifar.get_layer("conv1_conv").strides == (1, 1)
    # the same stages and blocks: only the first convolution's kernel differs in size
    assert [w.shape for w in cifar.weights[2:]] == [w.shape for w in stock.weights[2:]]
    model = wrap_for_input(build_classifier(stem="cifar", zero_init_residual=True), 32)
    assert not any(layer.name.startswith("resize") for layer in model.layers)  # 32 px as sent
    probs = np.asarray(model.predict_on_batch(_images()))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="imagenet stem"):
        build_classifier("imagenet", stem="cifar")
