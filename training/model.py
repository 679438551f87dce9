"""The classifier: raw uint8 CIFAR images in, 10 float32 probabilities out.

Everything a client would otherwise have to reproduce lives inside the graph: the cast, the
resize to the internal size, ResNet50's own ImageNet preprocessing, and optionally the
horizontal-flip test-time average. The network proper (``classifier``) accepts any spatial
size, so training can grow the internal size (progressive resizing) on the same weights.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.contract import INPUT_NAME
from training.data import IMAGE_SHAPE, NUM_CLASSES


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


def build_classifier(
    weights: str = "none",
    dropout: float = 0.2,
    num_classes: int = NUM_CLASSES,
    zero_init_residual: bool = False,
) -> keras.Model:
    """ResNet50 backbone plus a new head, taking float RGB images of any size in 0..255.

    With pretrained weights the backbone is called with ``training=False`` so that its
    BatchNormalization layers stay in inference mode even when later unfrozen (the
    keras-io transfer-learning recipe); from random init they must learn their statistics.

    ``zero_init_residual`` (random init only) starts the last BatchNorm scale of every
    residual block at zero, so each block begins as an identity: the architecture is
    unchanged, and from-scratch training at a high learning rate is far more stable.
    """
    pretrained = weights != "none"
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
    classifier: keras.Model, internal_size: int, tta_flip: bool = False
) -> keras.Model:
    """The contract model: uint8 ``[b, 32, 32, 3]`` → float32 ``[b, 10]`` probabilities.

    ``tta_flip`` averages the probabilities of the image and its mirror image, inside the graph.
    """
    inputs = keras.Input(IMAGE_SHAPE, dtype="uint8", name=INPUT_NAME)
    x = layers.Resizing(
        internal_size, internal_size, interpolation="bilinear", name=f"resize_{internal_size}"
    )(keras.ops.cast(inputs, "float32"))
    probs = classifier(x)
    if tta_flip:
        mirrored = classifier(keras.ops.flip(x, axis=2))
        probs = layers.Average(name="flip_average", dtype="float32")([probs, mirrored])
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
