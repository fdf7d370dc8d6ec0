"""Image classification datasets read from their official files: MNIST (IDX) and CIFAR10 (pickles).

No torchvision: the IDX reader and the CIFAR10 batch reader are ours. Files are looked up under
``<data root>/mnist/`` and ``<data root>/cifar10/cifar-10-batches-py/``; where missing they are
downloaded from the usual mirrors and checked against the published MD5 sums. A file that is
there but truncated or corrupt raises :class:`~odekit.data.root.DataCorruptError` naming it.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .download import fetch
from .root import DataUnavailableError, corrupt, is_data_file, read_data_file, reading

MNIST_FILES = {
    # name: (md5 of the official .gz, expected leading dimension)
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 60000),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 60000),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 10000),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 10000),
}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar10/cifar-10-batches-py"

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its declared shape."""
    if str(path).endswith(".gz"):
        data = read_data_file(path, lambda fh: gzip.GzipFile(fileobj=fh).read())
    else:
        data = read_data_file(path, lambda fh: fh.read())
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise corrupt(path, "is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise corrupt(path, f"is truncated or corrupt: {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def mnist_missing(root: Path) -> list[str]:
    folder = Path(root) / "mnist"
    return [str(folder / name) for name in MNIST_FILES if not is_data_file(folder / name)]


def download_mnist(root: Path) -> None:
    for name, (md5, _) in MNIST_FILES.items():
        target = Path(root) / "mnist" / name
        if not target.is_file():
            fetch(MNIST_MIRROR + name, target, md5, "md5")


def load_mnist(root: Path, train: bool = True, download: bool = True) -> TensorDataset:
    """MNIST as ``(images in [0, 1] of shape (N, 1, 28, 28), labels)``: the ToTensor transform only."""
    if mnist_missing(root):
        if not download:
            raise DataUnavailableError(f"MNIST files missing: {', '.join(mnist_missing(root))}")
        download_mnist(root)
    split = "train" if train else "t10k"
    folder = Path(root) / "mnist"
    images_path, labels_path = folder / f"{split}-images-idx3-ubyte.gz", folder / f"{split}-labels-idx1-ubyte.gz"
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise corrupt(images_path, f"holds an array of shape {images.shape}; MNIST images are N × 28 × 28")
    if labels.shape != images.shape[:1]:
        raise corrupt(labels_path, f"holds labels of shape {labels.shape} for {len(images)} images")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


def cifar10_missing(root: Path) -> list[str]:
    folder = Path(root) / CIFAR10_DIR
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return [str(folder / n) for n in names if not is_data_file(folder / n)]


def download_cifar10(root: Path) -> None:
    archive = Path(root) / "cifar10" / "cifar-10-python.tar.gz"
    if not is_data_file(archive):
        fetch(CIFAR10_URL, archive, CIFAR10_MD5, "md5")
    with reading(archive), tarfile.open(archive) as tar:
        tar.extractall(Path(root) / "cifar10", filter="data")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    def parse(fh: BinaryIO) -> tuple[np.ndarray, np.ndarray]:
        batch = pickle.load(fh, encoding="bytes")
        return np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)

    data, labels = read_data_file(path, parse)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise corrupt(path, f"is not a CIFAR10 python batch (data {data.shape}, labels {labels.shape})")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: Path, train: bool = True, download: bool = True) -> TensorDataset:
    """CIFAR10 from the official python-pickle batches, images in [0, 1] of shape (N, 3, 32, 32)."""
    if cifar10_missing(root):
        if not download:
            raise DataUnavailableError(f"CIFAR10 files missing: {', '.join(cifar10_missing(root))}")
        download_cifar10(root)
    folder = Path(root) / CIFAR10_DIR
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    parts = [_read_cifar_batch(folder / n) for n in names]
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    labels = np.concatenate([p[1] for p in parts])
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


class ImageData(NamedTuple):
    missing: Callable[[Path], list[str]]
    download: Callable[[Path], None]


# The image datasets by name: what is missing under a data root, and how to fetch it.
IMAGE_DATA = {"mnist": ImageData(mnist_missing, download_mnist),
              "cifar10": ImageData(cifar10_missing, download_cifar10)}
