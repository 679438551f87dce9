"""Host-side augmentation: shapes, dtypes, labels preserved, deterministic per (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import smooth_photo
from training.augment import (
    AugmentedBatches,
    UploadAugmentation,
    color_jitter,
    cutmix,
    cutout,
    grayscale,
    jpeg_roundtrip,
    mixup,
    one_hot,
    random_crop_flip,
)


def _images(n=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_crop_flip_keeps_shape_dtype_and_content():
    x = _images()
    out = random_crop_flip(x, np.random.default_rng(1), pad=4)
    assert out.shape == x.shape and out.dtype == np.uint8
    no_pad = random_crop_flip(x, np.random.default_rng(1), pad=0, flip=False)
    np.testing.assert_array_equal(no_pad, x)  # zero padding, no flip: identity
    # each output is a shifted (maybe mirrored) window of the zero-padded input
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(len(x)):
        windows = [padded[i, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any((w == out[i]).all() or (w[:, ::-1] == out[i]).all() for w in windows)


def test_batches_preserve_labels_and_are_deterministic():
    x = np.zeros((40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 10
    x[:, :, :, 0] = (y * 20)[:, None, None]  # label readable from the pixels, crop-invariant centre
    ds = AugmentedBatches(x, y, batch_size=8, seed=5)
    assert len(ds) == 5
    seen = []
    for i in range(len(ds)):
        xb, tb = ds[i]
        assert xb.shape == (8, 32, 32, 3) and xb.dtype == np.uint8
        assert tb.shape == (8, 10) and tb.dtype == np.float32
        np.testing.assert_array_equal(xb[:, 16, 16, 0] // 20, tb.argmax(1))
        seen.append(tb.argmax(1))
    assert sorted(np.concatenate(seen).tolist()) == sorted(y.tolist())  # every image once
    first = ds[2]
    ds.set_epoch(1)
    other = ds[2]
    ds.set_epoch(0)
    np.testing.assert_array_equal(ds[2][0], first[0])  # same (seed, epoch, index): same batch
    assert not np.array_equal(other[0], first[0])


def _constant_images(n: int = 16) -> np.ndarray:
    """Image i is filled with the value 10 * i, so every pixel names its source image."""
    return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 10, 32 * 32 * 3).reshape(
        n, 32, 32, 3
    )


def test_cutmix_pastes_a_box_from_a_partner_and_weights_labels_by_its_area():
    x, targets = _constant_images(), one_hot(np.arange(16), 16)  # image i has class i
    pasted_somewhere = False
    for seed in range(5):
        xm, tm = cutmix(x, targets, np.random.default_rng(seed))
        np.testing.assert_allclose(tm.sum(axis=1), 1.0, rtol=1e-6)
        for i in range(len(x)):
            foreign = xm[i, :, :, 0] != x[i, 0, 0, 0]
            if not foreign.any():  # partner is itself, or an empty box
                assert tm[i, i] == 1.0 or np.count_nonzero(tm[i]) == 1
                continue
            pasted_somewhere = True
            rows, cols = np.nonzero(foreign)
            box = foreign[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            assert box.all() and box.sum() == foreign.sum()  # one rectangle, nothing else
            partner = int(xm[i, rows[0], cols[0], 0]) // 10
            assert partner != i and (xm[i][foreign] == x[partner, 0, 0, 0]).all()
            area = foreign.mean()
            assert tm[i, partner] == pytest.approx(area) and tm[i, i] == pytest.approx(1 - area)
    assert pasted_somewhere


def test_mixup_blends_pixels_and_labels_with_the_same_weight():
    x, targets = _constant_images(), one_hot(np.arange(16), 16)
    blended_somewhere = False
    for seed in range(5):
        xm, tm = mixup(x, targets, np.random.default_rng(seed))
        np.testing.assert_allclose(tm.sum(axis=1), 1.0, rtol=1e-6)
        for i in range(len(x)):
            expected = np.round(tm[i] @ x[:, 0, 0, 0].astype(np.float64))
            assert (xm[i] == expected).all()  # the pixels mix exactly as the labels do
            if xm[i, 0, 0, 0] not in x[:, 0, 0, 0]:
                blended_somewhere = True  # differs from both sources
    assert blended_somewhere


def test_cutout_zeroes_one_square_clipped_at_the_border():
    x = np.full((64, 32, 32, 3), 200, dtype=np.uint8)
    out = cutout(x, np.random.default_rng(0), 12)
    assert (x == 200).all()  # the input is not changed in place
    for image in out:
        zero = (image == 0).all(-1)
        rows, cols = np.nonzero(zero)
        assert 0 < zero.sum() <= 144
        assert zero.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one axis-aligned box
        assert np.ptp(rows) + 1 <= 12 and np.ptp(cols) + 1 <= 12
        assert ((image == 200).all(-1) | zero).all()  # the rest untouched
    assert any((image == 0).all(-1).sum() == 144 for image in out)  # whole squares inside


def test_jpeg_roundtrip_changes_pixels_more_at_lower_quality():
    image = smooth_photo()
    low, high = jpeg_roundtrip(image, 30), jpeg_roundtrip(image, 95)
    assert low.shape == image.shape and low.dtype == np.uint8
    error = [np.abs(v.astype(int) - image).mean() for v in (low, high)]
    assert error[0] > error[1] > 0


def test_grayscale_has_equal_channels_and_pillows_luma():
    gray = grayscale(smooth_photo())
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 1], gray[..., 2])
    r, g, b = (smooth_photo()[..., i].astype(float) for i in range(3))
    np.testing.assert_allclose(gray[..., 0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1)


def test_color_jitter_stays_in_range_and_zero_strength_is_identity():
    image = smooth_photo()
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(color_jitter(image, rng, 0.0), image)
    jittered = [color_jitter(image, rng, 0.4) for _ in range(8)]
    assert all(j.dtype == np.uint8 and j.shape == image.shape for j in jittered)
    assert sum(not np.array_equal(j, image) for j in jittered) >= 7
    means = [j.mean() / image.mean() for j in jittered]
    assert 0.5 < min(means) and max(means) < 1.5  # a shift, not a different image


def test_upload_augmentation_changes_images_keeps_labels_and_is_deterministic():
    x = np.stack([smooth_photo(i) for i in range(40)])
    y = np.arange(40) % 10
    upload = UploadAugmentation(grayscale_prob=0.5, jpeg_prob=1.0, jpeg_quality=(30, 60))
    plain = AugmentedBatches(x, y, batch_size=8, seed=2)
    uploaded = AugmentedBatches(x, y, batch_size=8, seed=2, upload=upload)
    gray = []
    for i in range(len(plain)):
        (xp, tp), (xu, tu) = plain[i], uploaded[i]
        np.testing.assert_array_equal(tp, tu)  # same images, same labels
        assert (np.abs(xu.astype(int) - xp).mean(axis=(1, 2, 3)) > 0).all()  # every one JPEG'd
        gray += [(im[..., 0] == im[..., 1]).all() and (im[..., 1] == im[..., 2]).all() for im in xu]
    assert 10 < sum(gray) < 30  # about half of the 40 made gray
    np.testing.assert_array_equal(uploaded[1][0], uploaded[1][0])
    assert not UploadAugmentation().active
