"""Host-side augmentation in a ``keras.utils.PyDataset``.

Augmenting on the host (numpy) keeps the model graph free of random layers, which would
disable XLA on accelerators. The order and the augmentation of every batch are a pure function
of ``(seed, epoch, batch index)``, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import numpy as np
from keras.utils import PyDataset

from training.data import NUM_CLASSES


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def random_crop_flip(
    images: np.ndarray, rng: np.random.Generator, pad: int = 4, flip: bool = True
) -> np.ndarray:
    """Zero-pad by ``pad`` pixels, crop back to the original size at random, mirror half."""
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else images
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    for i in range(n):
        crop = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, ::-1] if mirror[i] else crop
    return out


def cutmix(
    images: np.ndarray, targets: np.ndarray, rng: np.random.Generator, alpha: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a random box from a shuffled copy of the batch; mix targets by the box's area."""
    n, h, w, _ = images.shape
    lam = rng.beta(alpha, alpha)
    cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    perm = rng.permutation(n)
    mixed = images.copy()
    mixed[:, y0:y1, x0:x1] = images[perm, y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, (1 - area) * targets + area * targets[perm]


def mixup(
    images: np.ndarray, targets: np.ndarray, rng: np.random.Generator, alpha: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Blend each image with a partner; the result stays uint8 (the model's input type)."""
    lam = rng.beta(alpha, alpha)
    perm = rng.permutation(len(images))
    blended = lam * images.astype(np.float32) + (1 - lam) * images[perm].astype(np.float32)
    return np.round(blended).astype(np.uint8), lam * targets + (1 - lam) * targets[perm]


class AugmentedBatches(PyDataset):
    """Shuffled, augmented training batches with one-hot (possibly mixed) targets.

    Incomplete final batches are dropped; every image is still seen across epochs because
    the permutation changes each epoch. Call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int = 0,
        pad: int = 4,
        flip: bool = True,
        mix: str = "none",
        mix_prob: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(x) < batch_size:
            raise ValueError(f"{len(x)} training images cannot fill one batch of {batch_size}")
        if mix not in ("none", "cutmix", "mixup"):
            raise ValueError(f"unknown mix '{mix}'")
        self.x, self.targets = x, one_hot(y)
        self.batch_size, self.seed = batch_size, seed
        self.pad, self.flip, self.mix, self.mix_prob = pad, flip, mix, mix_prob
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = random_crop_flip(self.x[idx], rng, self.pad, self.flip)
        targets = self.targets[idx]
        if self.mix != "none" and rng.random() < self.mix_prob:
            images, targets = (cutmix if self.mix == "cutmix" else mixup)(images, targets, rng)
        return images, targets
