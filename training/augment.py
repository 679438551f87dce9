"""Host-side augmentation in a ``keras.utils.PyDataset``: crop and flip, cutout, CutMix or
MixUp, and the upload forms (colour jitter, grayscale, JPEG).

Augmenting on the host (numpy) keeps the model graph free of random layers, which would
disable XLA on accelerators. The order and the augmentation of every batch are a pure function
of ``(seed, epoch, batch index)``, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from keras.utils import PyDataset
from PIL import Image

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


def cutout(images: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Zero a ``size`` x ``size`` square (clipped at the border) centred anywhere in each
    image (DeVries & Taylor 2017); labels are unchanged."""
    n, h, w, _ = images.shape
    out = images.copy()
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    for i in range(n):
        y0, x0 = max(cy[i] - size // 2, 0), max(cx[i] - size // 2, 0)
        out[i, y0 : cy[i] - size // 2 + size, x0 : cx[i] - size // 2 + size] = 0
    return out


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Scale brightness, contrast and saturation, each by a factor in ``[1-s, 1+s]``, in a
    random order, as cameras and editors shift them."""
    x = image.astype(np.float32)
    for op in rng.permutation(3):
        factor = rng.uniform(1 - strength, 1 + strength)
        if op == 0:
            x = x * factor
        elif op == 1:
            x = (x - x.mean()) * factor + x.mean()
        else:
            gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            x = (x - gray[..., None]) * factor + gray[..., None]
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def grayscale(image: np.ndarray) -> np.ndarray:
    """Gray with equal channels, by Pillow's own conversion (ITU-R 601-2 luma), as a gray
    upload reaches the model after the server's ``convert("RGB")``."""
    return np.asarray(Image.fromarray(image).convert("L").convert("RGB"))


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` and decode again, with Pillow, as a JPEG upload is."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


@dataclass(frozen=True)
class UploadAugmentation:
    """The ways a user's upload differs from a CIFAR image: colour shifts (``color_jitter``
    strength), gray photos (``grayscale_prob``) and JPEG compression (``jpeg_prob`` at a
    quality drawn from ``jpeg_quality``). Applied last, after crop, flip and mixing, as an
    upload is encoded after the picture is taken; the labels are unchanged."""

    color_jitter: float = 0.0
    grayscale_prob: float = 0.0
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)

    @property
    def active(self) -> bool:
        return bool(self.color_jitter or self.grayscale_prob or self.jpeg_prob)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = images.copy()
        low, high = self.jpeg_quality
        for i in range(len(out)):
            if self.color_jitter:
                out[i] = color_jitter(out[i], rng, self.color_jitter)
            if rng.random() < self.grayscale_prob:
                out[i] = grayscale(out[i])
            if rng.random() < self.jpeg_prob:
                out[i] = jpeg_roundtrip(out[i], rng.integers(low, high + 1))
        return out


class AugmentedBatches(PyDataset):
    """Shuffled, augmented training batches with one-hot (possibly mixed) targets.

    With a ``teacher`` (``distill.TeacherTargets``) the targets are its answer on each batch
    after mixing and before the upload forms. Incomplete final batches are dropped; every
    image is still seen across epochs because the permutation changes each epoch. Call
    ``set_epoch`` before each epoch.
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
        cutout: int = 0,
        upload: UploadAugmentation | None = None,
        teacher: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
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
        self.cutout, self.upload = cutout, upload or UploadAugmentation()
        self.teacher = teacher
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
        if self.cutout:
            images = cutout(images, rng, self.cutout)
        if self.mix != "none" and rng.random() < self.mix_prob:
            images, targets = (cutmix if self.mix == "cutmix" else mixup)(images, targets, rng)
        if self.teacher is not None:  # it sees the images as they are before the upload forms
            targets = self.teacher(images, targets)
        if self.upload.active:
            images = self.upload(images, rng)
        return images, targets
