"""Load CIFAR-10 from the official "python version" files.

Three sources, all giving the same arrays:

* a directory in the official ``cifar-10-batches-py`` layout (or its parent),
* the official ``cifar-10-python.tar.gz`` archive,
* ``"download"``: Keras' own download into ``~/.keras/datasets`` (needs internet).

The pickles are read with an unpickler that only admits the handful of globals the official
files use (numpy array reconstruction), so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
LAYOUT_DIR = "cifar-10-batches-py"
IMAGE_SHAPE = (32, 32, 3)  # one image: height, width, RGB
NUM_CLASSES = 10
ARCHIVE_NAME = "cifar-10-python.tar.gz"
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# (module, name) pairs the official pickles may reference; everything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class DataError(Exception):
    """The data set is missing, truncated or malformed; the message names the file and the fault."""


@dataclass(frozen=True)
class Split:
    """Images as uint8 NHWC ``(n, 32, 32, 3)`` and integer labels ``(n,)``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Cifar10:
    """The training and test splits, the class names, and where they came from."""

    train: Split
    test: Split
    class_names: list[str]
    source: str
    sha256: str


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{where}: not a readable CIFAR-10 pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _parse_batch(raw: bytes, where: str) -> Split:
    d = _unpickle(raw, where)
    for key in ("data", "labels"):
        if key not in d:
            raise DataError(f"{where}: missing key '{key}'")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{where}: 'data' must be uint8 of shape (n, 3072), found {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{where}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels outside 0..9")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(x), labels.astype(np.int64))


def _parse_meta(raw: bytes, where: str) -> list[str]:
    d = _unpickle(raw, where)
    names = d.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{where}: 'label_names' must be a list of 10 names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_directory(path: Path) -> dict[str, bytes]:
    if (path / LAYOUT_DIR).is_dir():
        path = path / LAYOUT_DIR
    files = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH, META):
        f = path / name
        if not f.is_file():
            raise DataError(f"{f}: missing (expected the official {LAYOUT_DIR} layout)")
        files[name] = f.read_bytes()
    return files


def _read_archive(path: Path) -> dict[str, bytes]:
    wanted = {f"{LAYOUT_DIR}/{n}": n for n in (*TRAIN_BATCHES, TEST_BATCH, META)}
    files = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name and member.isfile():
                    handle = tar.extractfile(member)
                    files[name] = handle.read() if handle else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable tar.gz archive ({exc})") from None
    missing = [n for n in wanted.values() if n not in files]
    if missing:
        raise DataError(f"{path}: archive lacks {LAYOUT_DIR}/{missing[0]}")
    return files


def _download() -> Path:
    import keras  # deferred: only the download path needs Keras

    archive = keras.utils.get_file(ARCHIVE_NAME, origin=DOWNLOAD_URL, extract=False)
    return Path(archive)


def load_cifar10(source: str | Path = "download") -> Cifar10:
    """Load CIFAR-10 from a layout directory, the official archive, or ``"download"``.

    The checksum is the sha256 over the raw bytes of the seven official files, in a fixed
    order, so two copies of the data set can be compared whatever their container.
    """
    if str(source) == "download":
        source = _download()
    path = Path(source).expanduser()
    if path.is_dir():
        files = _read_directory(path)
    elif path.is_file():
        files = _read_archive(path)
    else:
        raise DataError(f"{path}: no such file or directory")

    digest = hashlib.sha256()
    for name in (*TRAIN_BATCHES, TEST_BATCH, META):
        digest.update(files[name])
    train_parts = [_parse_batch(files[n], f"{path}:{n}") for n in TRAIN_BATCHES]
    test = _parse_batch(files[TEST_BATCH], f"{path}:{TEST_BATCH}")
    train = Split(
        np.concatenate([p.x for p in train_parts]), np.concatenate([p.y for p in train_parts])
    )
    class_names = _parse_meta(files[META], f"{path}:{META}")
    return Cifar10(train, test, class_names, str(path), digest.hexdigest())


def split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Carve a class-stratified validation split off the training set (never the test set)."""
    if fraction <= 0:
        return train, Split(train.x[:0], train.y[:0])
    if fraction >= 1:
        raise ValueError("validation fraction must be below 1")
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in np.unique(train.y):
        idx = np.flatnonzero(train.y == c)
        n_val = max(1, round(len(idx) * fraction))
        val_idx.append(rng.choice(idx, n_val, replace=False))
    val_mask = np.zeros(len(train), dtype=bool)
    val_mask[np.concatenate(val_idx)] = True
    return (
        Split(train.x[~val_mask], train.y[~val_mask]),
        Split(train.x[val_mask], train.y[val_mask]),
    )
