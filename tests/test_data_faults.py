"""Faults in the data root: corrupt, truncated and unreadable files, and a PyG cache that must follow the data root.

Real files are copied into ``tmp_path`` and the copies corrupted; the PyG cache lives under
``tmp_path`` too (``ODEKIT_CACHE``), so neither the offline copies nor the user's cache are touched.
"""

import errno
import os
import pickle
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from odekit.data import DataCorruptError, DataError, DataPermissionError, DataUnavailableError, graphs, walker2d
from odekit.data.images import load_cifar10, load_mnist, mnist_missing, read_idx
from odekit.data.plane_vibration import load_plane_vibration
from odekit.data.silverbox import load_silverbox
from odekit.data.silverbox import missing as silverbox_missing

ADVICE = "good copy"  # every corrupt-file message says how to replace the file
CORA = graphs.GRAPHS["cora"].raw_files


def _copy(data_root: Path, tmp_path: Path, folder: str, names=None) -> Path:
    """A writable copy of ``data_root/folder`` (or of the files ``names`` in it) under ``tmp_path/data``."""
    target = tmp_path / "data" / folder
    target.mkdir(parents=True)
    for name in names or [p.name for p in (data_root / folder).iterdir() if p.name != "SOURCE.md"]:
        shutil.copyfile(data_root / folder / name, target / name)
    return target


def _truncate(path: Path) -> bytes:
    """Cut ``path`` to half its length (plus a few bytes, to end mid-line); returns the original bytes."""
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2 + 3])
    return good


@pytest.fixture
def pyg_cache(tmp_path, monkeypatch) -> Path:
    """``ODEKIT_CACHE`` under ``tmp_path``: the default PyG cache of :func:`graphs.load_graph` is a scratch folder."""
    monkeypatch.setenv("ODEKIT_CACHE", str(tmp_path / "cache"))
    assert tmp_path in graphs.cache_dir().parents
    return graphs.cache_dir()


def test_error_classes_are_one_family_the_cli_can_catch():
    assert issubclass(DataError, OSError)
    for cls in (DataUnavailableError, DataCorruptError, DataPermissionError):
        assert issubclass(cls, DataError)
    assert issubclass(DataUnavailableError, FileNotFoundError)  # what callers caught before DataError existed
    assert issubclass(DataPermissionError, PermissionError)
    assert not issubclass(DataCorruptError, FileNotFoundError)  # a corrupt file is there


# ---- the PyG cache follows the data root ----------------------------------------------------------


def test_graph_cache_sees_a_corrupted_then_restored_raw_file(data_root, tmp_path, pyg_cache):
    folder = _copy(data_root, tmp_path, "planetoid", CORA)
    root = folder.parent
    good = graphs.load_graph("cora", root)
    graph_file = folder / "ind.cora.graph"
    original = _truncate(graph_file)
    for _ in range(2):  # the second load finds the corrupt copy already in the cache
        with pytest.raises(DataCorruptError) as caught:
            graphs.load_graph("cora", root)
        message = str(caught.value)
        assert str(graph_file) in message and str(pyg_cache / "Cora") in message and "restore" in message
        assert str(folder / "ind.cora.x") not in message  # only the file that changed is blamed
    graph_file.write_bytes(original)
    again = graphs.load_graph("cora", root)
    for key in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(again[key], good[key]), key


def test_graph_cache_sees_an_updated_raw_file(data_root, tmp_path, pyg_cache):
    folder = _copy(data_root, tmp_path, "planetoid", CORA)
    before = graphs.load_graph("cora", folder.parent)
    index = folder / "ind.cora.test.index"
    index.write_text("\n".join(index.read_text().splitlines()[:500]) + "\n")  # a valid file with fewer test nodes
    after = graphs.load_graph("cora", folder.parent)
    assert int(after.test_mask.sum()) < int(before.test_mask.sum())


def test_broken_graph_cache_is_named_with_the_fix(data_root, tmp_path, pyg_cache):
    folder = _copy(data_root, tmp_path, "planetoid", CORA)
    good = graphs.load_graph("cora", folder.parent)
    (pyg_cache / "Cora" / "processed" / "data.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataCorruptError, match=f"cache {pyg_cache / 'Cora'} is broken: delete that folder"):
        graphs.load_graph("cora", folder.parent)
    shutil.rmtree(pyg_cache / "Cora")
    assert torch.equal(graphs.load_graph("cora", folder.parent).edge_index, good.edge_index)


# ---- corrupt and truncated files ------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_corrupt_mnist_gz_names_the_file(data_root, tmp_path, damage):
    folder = _copy(data_root, tmp_path, "mnist")
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    if damage == "truncated":
        _truncate(bad)
    else:
        bad.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(DataCorruptError, match="truncated or corrupt") as caught:
        load_mnist(folder.parent, train=False, download=False)
    assert str(bad) in str(caught.value) and ADVICE in str(caught.value)


def test_idx_shape_faults_name_the_file(tmp_path):
    bad = tmp_path / "images.idx"
    bad.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(DataCorruptError, match=f"{bad} is truncated or corrupt: 11 bytes, expected 13"):
        read_idx(bad)


@pytest.mark.parametrize("damage", ["truncated", "garbage line"])
def test_corrupt_silverbox_csv_names_the_file(data_root, tmp_path, damage):
    folder = _copy(data_root, tmp_path, "silverbox")
    bad = folder / "sb.csv"
    if damage == "truncated":
        _truncate(bad)
    else:
        lines = bad.read_bytes().splitlines(keepends=True)
        bad.write_bytes(b"".join(lines[:50] + [b"0.1;0.2\n"] + lines[50:]))
    with pytest.raises(DataCorruptError, match="Line #") as caught:
        load_silverbox(folder.parent, download_if_missing=False)
    assert str(bad) in str(caught.value) and ADVICE in str(caught.value)
    assert "\n" not in str(caught.value)  # numpy's one line per bad row, folded into one


def test_corrupt_plane_vibration_csv_names_the_file(data_root, tmp_path):
    folder = _copy(data_root, tmp_path, "f16_gvt")
    bad = folder / "pv.csv"
    _truncate(bad)
    with pytest.raises(DataCorruptError, match="truncated or corrupt") as caught:
        load_plane_vibration(folder.parent, download_if_missing=False)
    assert str(bad) in str(caught.value) and ADVICE in str(caught.value)


def _cifar_fixture(root: Path) -> Path:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": list(rng.integers(0, 10, 4)), b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


@pytest.mark.parametrize("damage", ["truncated", "not a batch"])
def test_corrupt_cifar10_batch_names_the_file(tmp_path, damage):
    bad = _cifar_fixture(tmp_path) / "test_batch"
    if damage == "truncated":
        _truncate(bad)
    else:
        bad.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataCorruptError, match="truncated or corrupt") as caught:
        load_cifar10(tmp_path, train=False, download=False)
    assert str(bad) in str(caught.value)


def test_corrupt_walker2d_files_name_the_file(tmp_path):
    folder = tmp_path / walker2d.FOLDER
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(4):
        np.save(folder / f"trajectory_{i}.npy", rng.randn(100, walker2d.FEATURES).astype(np.float32))
    bad = folder / "trajectory_2.npy"
    _truncate(bad)
    with pytest.raises(DataCorruptError, match="truncated or corrupt") as caught:
        walker2d.load_walker2d(tmp_path, download_if_missing=False)
    assert str(bad) in str(caught.value) and f"delete the folder {folder}" in str(caught.value)
    archive = tmp_path / "walker.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("walker/a.npy", b"x" * 1000)
    _truncate(archive)
    with pytest.raises(DataCorruptError, match=f"{archive} is truncated or corrupt"):
        walker2d.extract(archive, tmp_path / "elsewhere")


# ---- unreadable files and folders -----------------------------------------------------------------


def _within(path: Path, target: Path, inside_only: bool) -> bool:
    path = Path(os.path.abspath(path))
    return target in path.parents or (not inside_only and path == target)


@pytest.fixture
def unreadable(monkeypatch):
    """``make(path)``: chmod 000 on a file or folder. Root reads through chmod, so for root the
    PermissionError the system gives everyone else (opening the file; for a folder, listing it and
    stat or open of anything in it) is raised by pathlib for those paths only; the loaders reach the
    file system through pathlib."""
    made = []

    def make(path: Path) -> Path:
        target = Path(os.path.abspath(path))
        is_folder = target.is_dir()
        made.append((target, stat.S_IMODE(target.stat().st_mode)))
        target.chmod(0)
        if os.geteuid() != 0:
            return path

        def denied(p) -> PermissionError:
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))

        real_open, real_stat, real_iterdir = Path.open, Path.stat, Path.iterdir

        def fake_open(self, *args, **kwargs):
            if _within(self, target, inside_only=False):
                raise denied(self)
            return real_open(self, *args, **kwargs)

        def fake_stat(self, *args, **kwargs):
            if is_folder and _within(self, target, inside_only=True):
                raise denied(self)
            return real_stat(self, *args, **kwargs)

        def fake_iterdir(self):
            if is_folder and Path(os.path.abspath(self)) == target:
                raise denied(self)
            return real_iterdir(self)

        monkeypatch.setattr(Path, "open", fake_open)
        monkeypatch.setattr(Path, "stat", fake_stat)
        monkeypatch.setattr(Path, "iterdir", fake_iterdir)
        return path

    yield make
    for target, mode in made:
        target.chmod(mode)


def _says_fix_permissions(err: BaseException, path: Path) -> bool:
    return str(path) in str(err) and "chmod" in str(err) and "readable" in str(err)


def test_unreadable_mnist_file(data_root, tmp_path, unreadable):
    folder = _copy(data_root, tmp_path, "mnist")
    bad = unreadable(folder / "t10k-images-idx3-ubyte.gz")
    assert mnist_missing(folder.parent) == []  # it is there, only not readable
    with pytest.raises(DataPermissionError) as caught:
        load_mnist(folder.parent, train=False, download=False)
    assert _says_fix_permissions(caught.value, bad)


def test_unreadable_silverbox_file_and_folder(data_root, tmp_path, unreadable):
    folder = _copy(data_root, tmp_path, "silverbox")
    bad = unreadable(folder / "sb.csv")
    with pytest.raises(DataPermissionError) as caught:
        load_silverbox(folder.parent, download_if_missing=False)
    assert _says_fix_permissions(caught.value, bad)


def test_unreadable_data_folder(tmp_path, unreadable):
    (tmp_path / "silverbox").mkdir()
    (tmp_path / "silverbox" / "sb.csv").write_text('"V1","V2",\n0.1,0.2,\n')
    unreadable(tmp_path / "silverbox")
    for check in (silverbox_missing, lambda root: load_silverbox(root, download_if_missing=False)):
        with pytest.raises(DataPermissionError) as caught:
            check(tmp_path)
        assert _says_fix_permissions(caught.value, tmp_path / "silverbox" / "sb.csv")


def test_unreadable_walker2d_folder(tmp_path, unreadable):
    folder = tmp_path / walker2d.FOLDER
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((80, walker2d.FEATURES), dtype=np.float32))
    unreadable(folder)
    # not taken for an empty folder (which would send the loader off to download)
    with pytest.raises(DataPermissionError) as caught:
        walker2d.missing(tmp_path)
    assert _says_fix_permissions(caught.value, folder)


def test_unreadable_graph_raw_file(data_root, tmp_path, pyg_cache, unreadable):
    folder = _copy(data_root, tmp_path, "planetoid", CORA)
    bad = unreadable(folder / "ind.cora.allx")
    with pytest.raises(DataPermissionError) as caught:
        graphs.load_graph("cora", folder.parent)
    assert _says_fix_permissions(caught.value, bad)


def test_missing_data_is_what_the_config_uses(tmp_path):
    """Each experiment checks the datasets its config names (grand_proximal's smoke profile runs on Cora)."""
    from odekit.experiments import get

    proximal = get("grand_proximal")
    smoke = " ".join(proximal.missing_data(tmp_path, proximal.config("smoke")))
    assert "cora" in smoke.lower() and "coauthor" not in smoke.lower()
    labels = get("grand_labels")
    full = " ".join(labels.missing_data(tmp_path, labels.config("full")))
    assert all(name in full.lower() for name in ("pubmed", "computers", "photo"))
    images = get("image_classification")
    cifar = " ".join(images.missing_data(tmp_path, images.config("quick", {"dataset": "cifar10"})))
    assert "cifar" in cifar.lower() and "mnist" not in cifar.lower()
