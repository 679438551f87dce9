"""The classifier: raw uint8 CIFAR images in, 10 float32 probabilities out.

Everything a client would otherwise have to reproduce lives inside the graph: the cast, the
resize to the internal size, ResNet50's own ImageNet preprocessing, and optionally the
test-time averages (flip, translate). The network proper (``classifier``) accepts any spatial
size, so training can grow the internal size (progressive resizing) on the same weights.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.calibration import PROBABILITY_FLOOR
from training.config import ConfigError
from training.contract import INPUT_NAME
from training.data import IMAGE_SHAPE, NUM_CLASSES

CIFAR_STEMS = ("cifar", "cifar-full")


def resolve_weights(weights: str) -> str | None:
    """Map the CLI's ``imagenet`` / ``none`` / ``PATH.h5`` to what Keras' ResNet50 accepts."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights file not found")
    return str(path)


def _bottleneck(x, filters: int, stride: int, shortcut_conv: bool, name: str):
    """ResNet50's v1 bottleneck block (1x1, 3x3, 1x1 expanding 4x), named as Keras names it."""
    bn = {"axis": 3, "epsilon": 1.001e-5}
    if shortcut_conv:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(**bn, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(**bn, name=f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(**bn, name=f"{name}_2_bn")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = layers.BatchNormalization(**bn, name=f"{name}_3_bn")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnet50_cifar_stem(max_pool: bool = True) -> keras.Model:
    """ResNet50 with a CIFAR stem: a 3x3 stride-1 convolution on the 32 px image and one
    stride-2 max-pool, in place of the 7x7 stride-2 convolution and max-pool that ImageNet's
    224 px images need. At 32 px in, stage 2 sees 16x16 maps, as the stock stem gives at 64 px
    in, so the cost is about the same, but the first layer sees real pixels, not upscaled
    ones. The stages, blocks and layer names are ResNet50's own (``conv2_block1_1_conv``...).

    ``max_pool=False`` (the ``cifar-full`` stem) drops the max-pool: stage 2 works on the full
    32x32 maps, as the CIFAR ResNets that reach 95 % do, at about 4x the cost of a pass. The
    max-pool has no weights, so the two stems hold the same weights under the same names.
    """
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(64, 3, padding="same", name="conv1_conv")(inputs)
    x = layers.BatchNormalization(axis=3, epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    if max_pool:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for stage, (filters, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
        for block in range(blocks):
            x = _bottleneck(
                x,
                filters,
                stride=2 if block == 0 and stage > 0 else 1,
                shortcut_conv=block == 0,
                name=f"conv{stage + 2}_block{block + 1}",
            )
    return keras.Model(inputs, x, name="resnet50")


def build_classifier(
    weights: str = "none",
    dropout: float = 0.2,
    num_classes: int = NUM_CLASSES,
    zero_init_residual: bool = False,
    stem: str = "imagenet",
) -> keras.Model:
    """ResNet50 backbone plus a new head, taking float RGB images of any size in 0..255.

    With pretrained weights the backbone is called with ``training=False`` so that its
    BatchNormalization layers stay in inference mode even when later unfrozen (the
    keras-io transfer-learning recipe); from random init they must learn their statistics.

    ``zero_init_residual`` (random init only) starts the last BatchNorm scale of every
    residual block at zero, so each block begins as an identity: the architecture is
    unchanged, and from-scratch training at a high learning rate is far more stable.

    ``stem`` is ``imagenet`` (Keras' ResNet50, which pretrained weights need), ``cifar``
    (``resnet50_cifar_stem``, random init only) or ``cifar-full`` (the same without its
    max-pool).
    """
    pretrained = weights != "none"
    if stem in CIFAR_STEMS:
        if pretrained:
            raise ValueError("pretrained weights need the imagenet stem")
        backbone = resnet50_cifar_stem(max_pool=stem == "cifar")
    else:
        backbone = keras.applications.ResNet50(
            include_top=False, weights=resolve_weights(weights), input_shape=(None, None, 3)
        )
    backbone.trainable = not pretrained
    if zero_init_residual and not pretrained:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization) and layer.name.endswith("_3_bn"):
                layer.gamma.assign(np.zeros(layer.gamma.shape, dtype="float32"))
    inputs = keras.Input((None, None, 3), name="rgb_float")
    x = keras.applications.resnet50.preprocess_input(inputs)
    x = backbone(x, training=False if pretrained else None)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="resnet50_cifar10")


def backbone_of(classifier: keras.Model) -> keras.Model:
    return classifier.get_layer("resnet50")


def wrap_for_input(
    classifier: keras.Model,
    internal_size: int,
    tta_flip: bool = False,
    tta_translate: int = 0,
    temperature: float | None = None,
) -> keras.Model:
    """The contract model: uint8 ``[b, 32, 32, 3]`` → float32 ``[b, 10]`` probabilities.

    ``tta_flip`` averages the probabilities of the image and its mirror image, inside the graph.
    ``tta_translate`` (pixels, needs the flip) also averages two copies moved that far along the
    diagonal, one each way (zero fill, as training's crop pads), each with its mirror: half the
    weight on the image itself, a quarter on each moved copy, six passes of the network in all
    (airbench's translate averaging, applied to probabilities).

    The copies go through the network as one batch (stacked on the batch axis, the
    probabilities averaged back per image), not as one call each: the same numbers, and in
    OpenVINO on a 2-core Zen 4 a lone image's six passes take 1.7x less time (18 ms against 30
    in f32, 10 against 17 in bf16), as one image's small maps leave the cores idle; batches of
    16, and the flip alone, from 3 % slower to 10 % faster (``benchmarks/tta_batching.py``).

    ``temperature`` (``training.calibration``) calibrates the answer last, after the averages:
    ``softmax(log p / T)``, in float32, so every runtime that reads the graph answers calibrated
    probabilities.
    """
    if tta_translate < 0 or (tta_translate and not tta_flip):
        raise ConfigError("the test-time translate needs the flip and a non-negative shift")
    inputs = keras.Input(IMAGE_SHAPE, dtype="uint8", name=INPUT_NAME)
    x = keras.ops.cast(inputs, "float32")
    copies, weights = [x], [1.0]
    if tta_translate:
        k = tta_translate
        padded = layers.ZeroPadding2D(k, name="translate_pad")(x)
        copies += [
            layers.Cropping2D(((0, 2 * k), (0, 2 * k)), name="translate_down_right")(padded),
            layers.Cropping2D(((2 * k, 0), (2 * k, 0)), name="translate_up_left")(padded),
        ]
        weights = [0.5, 0.25, 0.25]
    if tta_flip:
        copies += [keras.ops.flip(c, axis=2) for c in copies]
        weights = [w / 2 for w in weights] * 2
    batch = copies[0] if len(copies) == 1 else keras.ops.concatenate(copies, axis=0)
    if internal_size != IMAGE_SHAPE[0]:
        batch = layers.Resizing(
            internal_size, internal_size, interpolation="bilinear", name=f"resize_{internal_size}"
        )(batch)
    probs = classifier(batch)
    if len(copies) > 1:  # [copies * b, classes] -> the weighted average over the copies
        per_copy = keras.ops.reshape(probs, (len(copies), -1, probs.shape[-1]))
        weight = np.asarray(weights, dtype="float32").reshape(-1, 1, 1)
        probs = keras.ops.sum(per_copy * weight, axis=0)
    if temperature is not None:
        if not temperature > 0:
            raise ConfigError(f"the temperature must be positive, got {temperature}")
        logits = keras.ops.log(keras.ops.maximum(probs, PROBABILITY_FLOOR))
        probs = keras.ops.softmax(logits * np.float32(1.0 / temperature), axis=-1)
    return keras.Model(inputs, probs, name=f"{classifier.name}_{internal_size}px")


def set_backbone_trainable(classifier: keras.Model, stages: int | None) -> None:
    """Unfreeze the top ``stages`` ResNet stages (``None``: all), keeping BatchNorm frozen.

    ResNet50's stages are the layer-name prefixes conv2..conv5; frozen BatchNorm layers run
    in inference mode in Keras 3, which is what fine-tuning from pretrained weights wants.
    """
    backbone = backbone_of(classifier)
    backbone.trainable = True
    top = [f"conv{5 - i}_" for i in range(stages)] if stages is not None else None
    for layer in backbone.layers:
        is_bn = isinstance(layer, layers.BatchNormalization)
        in_scope = top is None or layer.name.startswith(tuple(top))
        layer.trainable = in_scope and not is_bn
