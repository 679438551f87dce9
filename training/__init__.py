"""Offline training of the CIFAR-10 ResNet50 classifier: data, model, training, export."""

__version__ = "0.1.0"
