"""MNIST (IDX) and CIFAR10 (python pickles) readers: real files where present, fixtures in the real format."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from odekit.data import DataCorruptError, DataUnavailableError
from odekit.data.images import cifar10_missing, load_cifar10, load_mnist, mnist_missing, read_idx


def _write_idx(path, array):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def _mnist_fixture(root, n=12):
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))


def test_mnist_reader_on_a_fixture_in_the_real_format(tmp_path):
    _mnist_fixture(tmp_path)
    assert mnist_missing(tmp_path) == []
    data = load_mnist(tmp_path, train=True, download=False)
    x, y = data.tensors
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [i % 10 for i in range(12)]
    raw = read_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz")
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(raw.astype(np.float32)))


def test_corrupt_idx_files_are_rejected(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(DataCorruptError, match="truncated or corrupt"):
        read_idx(bad)
    with gzip.open(bad, "wb") as fh:
        fh.write(b"PK\x03\x04")
    with pytest.raises(DataCorruptError, match="magic"):
        read_idx(bad)


def test_missing_mnist_without_download_names_the_files(tmp_path):
    with pytest.raises(DataUnavailableError, match="train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, download=False)


def test_real_mnist(data_root):
    train = load_mnist(data_root, train=True, download=False)
    test = load_mnist(data_root, train=False, download=False)
    assert len(train) == 60000 and len(test) == 10000
    counts = torch.bincount(train.tensors[1], minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_cifar10_reader_on_a_fixture_in_the_real_format(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": list(rng.integers(0, 10, 4)),
                 b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * 4}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    assert cifar10_missing(tmp_path) == []
    train = load_cifar10(tmp_path, train=True, download=False)
    test = load_cifar10(tmp_path, train=False, download=False)
    assert train.tensors[0].shape == (20, 3, 32, 32) and test.tensors[0].shape == (4, 3, 32, 32)
    # Channel-major layout: the first 1024 bytes of a row are the red plane.
    with open(folder / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")[b"data"][0]
    assert torch.allclose(test.tensors[0][0, 0].flatten() * 255, torch.from_numpy(raw[:1024].astype(np.float32)))
