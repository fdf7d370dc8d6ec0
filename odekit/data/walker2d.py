"""Walker2d kinematic simulation (ODE-LSTM's ``walker.zip``) as irregular windows (thesis §3.5.3.3).

The archive holds one ``.npy`` per trajectory (steps × 17 joint features). It is read from
``<data root>/walker/*.npy``; where absent it is downloaded from the ODE-LSTM authors' site and
unpacked there (the site publishes no checksum: the loader checks every file's shape instead).

Preprocessing as ODE-LSTM's ``Walker2dImitationData`` and the authors' HBNODE code: files sorted, then
shuffled with ``RandomState(125487)``: 15% test, 10% validation, the rest training; each step is
kept with probability 0.9 (``RandomState(891374)``, drawn file by file); windows of 65 kept steps
with stride 16. A window's inputs are its first 64 kept steps, the targets the next kept step of
each, the gaps the number of raw steps between them divided by 64. (ODE-LSTM's target is the next
raw step; odekit predicts the next observed one, as for the plane-vibration data, so that the gap
to every prediction is known.)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .download import fetch
from .plane_vibration import WindowSet
from .root import DataCorruptError, DataUnavailableError, read_data_file, reading

FOLDER = "walker"
URL = "https://pub.ist.ac.at/~mlechner/datasets/walker.zip"
FEATURES = 17
WINDOW = 65
STRIDE = 16
TIME_SCALE = 64.0


def trajectory_files(root: Path) -> list[Path]:
    """The trajectory files under ``<root>/walker``, sorted (none where the folder is absent)."""
    folder = Path(root) / FOLDER
    # listed, not globbed: glob skips a folder it may not read, which would pass for an empty one
    with reading(folder):
        return sorted(p for p in folder.iterdir() if p.suffix == ".npy") if folder.is_dir() else []


def _advice(root: Path) -> str:
    # one trajectory less would change the split: the folder is replaced as a whole
    return (f"delete the folder {Path(root) / FOLDER} so that walker.zip is downloaded and unpacked again (where "
            f"there is internet; else unzip {URL} there by hand), or point --data-dir / ODEKIT_DATA at a good copy")


def missing(root: Path) -> list[str]:
    """What is missing under ``root`` (empty when trajectories are there)."""
    if trajectory_files(root):
        return []
    return [f"{Path(root) / FOLDER}/*.npy (ODE-LSTM's walker.zip, downloads from {URL})"]


def extract(archive: Path, root: Path) -> Path:
    """Unpack ``walker.zip`` so that the trajectories end up in ``<root>/walker/``."""
    target = Path(root) / FOLDER
    target.mkdir(parents=True, exist_ok=True)
    with reading(archive, f"delete it and download {URL} again"), zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if member.endswith(".npy"):
                (target / Path(member).name).write_bytes(zf.read(member))
    if not trajectory_files(root):
        raise DataUnavailableError(f"{archive} holds no .npy trajectories; is it ODE-LSTM's walker.zip?")
    return target


def download(root: Path) -> Path:
    """Fetch and unpack ``walker.zip`` into ``root``; raises :class:`DataUnavailableError` offline."""
    archive = fetch(URL, Path(root) / "walker.zip", None)
    folder = extract(archive, root)
    archive.unlink()
    return folder


def _windows(trajectories: list[np.ndarray], keep: np.random.RandomState) -> WindowSet:
    xs, ys, dts, idx = [], [], [], []
    for arr in trajectories:
        kept = np.flatnonzero(keep.rand(len(arr)) < 0.9)
        for start in range(0, len(kept) - WINDOW + 1, STRIDE):
            steps = kept[start:start + WINDOW]
            xs.append(arr[steps[:-1]])
            ys.append(arr[steps[1:]])
            dts.append(np.diff(steps) / TIME_SCALE)
            idx.append(steps[:-1])
    if not xs:
        empty = torch.zeros(0, WINDOW - 1, FEATURES)
        return WindowSet(empty, torch.zeros(0, WINDOW - 1), empty, torch.zeros(0, 0, FEATURES),
                         torch.zeros(0, WINDOW - 1, dtype=torch.long))
    return WindowSet(torch.tensor(np.stack(xs), dtype=torch.float32), torch.tensor(np.stack(dts), dtype=torch.float32),
                     torch.tensor(np.stack(ys), dtype=torch.float32), torch.zeros(len(xs), 0, FEATURES),
                     torch.from_numpy(np.stack(idx)))


def load_walker2d(root: Path, download_if_missing: bool = True) -> dict[str, WindowSet]:
    """Train / val / test windows of the Walker2d trajectories under ``<root>/walker``."""
    files = trajectory_files(root)
    if not files:
        if not download_if_missing:
            raise DataUnavailableError(f"Walker2d trajectories missing: {Path(root) / FOLDER}/*.npy "
                                       f"(download and unzip {URL} there)")
        download(root)
        files = trajectory_files(root)
    order = list(files)
    np.random.RandomState(125487).shuffle(order)
    test_n = int(0.15 * len(order))
    valid_n = int(0.25 * len(order)) - test_n
    parts = {"test": order[:test_n], "val": order[test_n:test_n + valid_n], "train": order[test_n + valid_n:]}
    keep = np.random.RandomState(891374)
    out = {}
    for name in ("train", "val", "test"):  # the draw order of the keep mask is part of the protocol
        arrays = []
        for path in parts[name]:
            arr = read_data_file(path, np.load, _advice(root))
            if arr.ndim != 2 or arr.shape[1] != FEATURES:
                raise DataCorruptError(f"{path} has shape {arr.shape}; Walker2d trajectories are steps × 17: "
                                       + _advice(root))
            arrays.append(arr.astype(np.float32))
        out[name] = _windows(arrays, keep)
    return out
