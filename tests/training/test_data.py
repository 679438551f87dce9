"""CIFAR-10 loading from the official layout and archive, and every malformed-data error."""

from __future__ import annotations

import pickle
import shutil
import tarfile

import numpy as np
import pytest

from tests.helpers import BATCH_NAMES, CLASS_NAMES, make_batch, write_cifar_tar
from training.data import DataError, Split, load_cifar10, split_validation


def test_directory_round_trip(cifar_dir):
    data = load_cifar10(cifar_dir)
    assert data.train.x.shape == (100, 32, 32, 3) and data.train.x.dtype == np.uint8
    assert data.test.x.shape == (20, 32, 32, 3)
    assert data.class_names == CLASS_NAMES
    x0, y0 = make_batch(20, 0)
    np.testing.assert_array_equal(data.train.x[:20], x0)  # CHW rows back to HWC exactly
    assert data.train.y[:20].tolist() == y0
    assert load_cifar10(cifar_dir.parent).sha256 == data.sha256  # parent folder works too


def test_archive_round_trip_matches_directory(cifar_dir, tmp_path):
    archive = write_cifar_tar(cifar_dir, tmp_path / "cifar-10-python.tar.gz")
    from_tar, from_dir = load_cifar10(archive), load_cifar10(cifar_dir)
    np.testing.assert_array_equal(from_tar.train.x, from_dir.train.x)
    np.testing.assert_array_equal(from_tar.test.y, from_dir.test.y)
    assert from_tar.sha256 == from_dir.sha256


@pytest.fixture
def broken_dir(cifar_dir, tmp_path):
    target = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar_dir, target)
    return target


def _rewrite(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "damage,expected",
    [
        ("missing", "data_batch_3: missing"),
        ("truncated", "not a readable CIFAR-10 pickle"),
        ("wrong_dtype", "'data' must be uint8 of shape (n, 3072)"),
        ("wrong_width", "'data' must be uint8 of shape (n, 3072)"),
        ("label_count", "19 labels for 20 images"),
        ("label_range", "labels outside 0..9"),
        ("no_labels", "missing key 'labels'"),
        ("not_a_dict", "expected a dict"),
        ("forbidden_global", "forbidden global"),
        ("bad_meta", "'label_names' must be a list of 10 names"),
    ],
)
def test_malformed_data_names_the_file_and_the_fault(broken_dir, damage, expected):
    target = broken_dir / ("batches.meta" if damage == "bad_meta" else "data_batch_3")
    x, labels = make_batch(20, 3)
    rows = x.transpose(0, 3, 1, 2).reshape(20, 3072)
    good = {b"data": rows, b"labels": labels}
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:500])
    elif damage == "wrong_dtype":
        _rewrite(target, {**good, b"data": rows.astype(np.float32)})
    elif damage == "wrong_width":
        _rewrite(target, {**good, b"data": rows[:, :100]})
    elif damage == "label_count":
        _rewrite(target, {**good, b"labels": labels[:19]})
    elif damage == "label_range":
        _rewrite(target, {**good, b"labels": [12] * 20})
    elif damage == "no_labels":
        _rewrite(target, {b"data": rows})
    elif damage == "not_a_dict":
        _rewrite(target, [1, 2, 3])
    elif damage == "forbidden_global":
        _rewrite(target, {**good, b"extra": Evil()})
    elif damage == "bad_meta":
        _rewrite(target, {b"label_names": [b"cat"]})
    with pytest.raises(DataError) as err:
        load_cifar10(broken_dir)
    assert expected in str(err.value)
    assert target.name in str(err.value)


def test_archive_errors(cifar_dir, tmp_path):
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        for name in BATCH_NAMES[:3]:
            tar.add(cifar_dir / name, arcname=f"cifar-10-batches-py/{name}")
    with pytest.raises(DataError, match="archive lacks cifar-10-batches-py/data_batch_4"):
        load_cifar10(partial)
    full = write_cifar_tar(cifar_dir, tmp_path / "full.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.tar.gz: not a readable tar.gz archive"):
        load_cifar10(cut)
    with pytest.raises(DataError, match="no such file or directory"):
        load_cifar10(tmp_path / "nowhere")


def test_validation_split_is_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(10), 50)
    x = np.arange(len(y) * 3072, dtype=np.int64).reshape(len(y), 32, 32, 3) % 251
    x = x.astype(np.uint8)
    x[:, 0, 0, 0] = np.arange(len(y)) % 256
    x[:, 0, 0, 1] = np.arange(len(y)) // 256
    train, val = split_validation(Split(x, y), 0.1, seed=3)
    assert len(val) == 50 and len(train) == 450
    assert np.bincount(val.y).tolist() == [5] * 10
    ids = lambda s: set((s.x[:, 0, 0, 0].astype(int) + 256 * s.x[:, 0, 0, 1].astype(int)).tolist())  # noqa: E731
    assert not ids(train) & ids(val) and len(ids(train) | ids(val)) == 500
    again = split_validation(Split(x, y), 0.1, seed=3)[1]
    np.testing.assert_array_equal(again.x, val.x)
