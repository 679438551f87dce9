"""Offline training of the CIFAR-10 ResNet50 classifier: data, model, training, export."""
