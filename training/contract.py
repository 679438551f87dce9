"""The names of the model contract, as the training side writes them.

``app/`` reads the same names with its own constants (the two packages share the exported
artifact, not Python code): a SavedModel whose ``serving_default`` signature takes ``image``
uint8 ``[batch, 32, 32, 3]`` and returns ``probabilities`` float32 ``[batch, classes]``, with
``model_card.json`` beside ``saved_model.pb``, and optionally an OpenVINO int8 IR in
``openvino-int8/model.xml`` (``cifar10-model quantize``).
"""

SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
CARD_NAME = "model_card.json"
INT8_DIR = "openvino-int8"
