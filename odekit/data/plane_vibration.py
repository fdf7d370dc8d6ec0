"""The F-16 ground vibration test ("plane vibration", Noël & Schoukens 2017) as irregular windows.

The file is the ``pv.csv`` the heavy-ball paper's code reads: 73,728 rows of force, voltage and
three accelerations (plus an ``Fs`` column set only in the first row and a trailing empty
column). It is looked up under ``<data root>/f16_gvt/pv.csv`` and, where missing, downloaded
from the authors' repository and checked against its SHA-256.

Preprocessing (thesis §3.5.3.2 and the authors' ``pvdat.py``, the authors' HBNODE code): z-score each
feature; drop the last 100 rows; keep a seeded random 90% of the time indices, sorted; split
the kept indices contiguously 2:1:1 into train / validation / test; cut each part into
non-overlapping windows of 65 kept indices. A window's inputs are its first 64 samples, its
next-step targets are samples 2–65, the gap of input ``j`` is the time (index difference, ≥ 1)
from it to its target, and the forecast targets are the 8 raw rows that follow the last input
(unit steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .download import fetch
from .root import DataUnavailableError, corrupt, is_data_file, read_data_file

FILE = "f16_gvt/pv.csv"
SHA256 = "b72a9d063e392570bb20c26f4763232e30262e5914d946e475e67df40880db6d"
URL = "https://raw.githubusercontent.com/hedixia/HeavyBallNODE/cd1065febea8ebf51eda954734e1cbe1fd565ae9/data/pv.csv"
FEATURES = ("force", "voltage", "acceleration 1", "acceleration 2", "acceleration 3")
WINDOW = 65
FORECAST = 8


def missing(root: Path) -> list[str]:
    """What is missing under ``root`` (empty when the file is there)."""
    return [] if is_data_file(Path(root) / FILE) else [f"{Path(root) / FILE} (downloads from {URL})"]


def download(root: Path) -> Path:
    """Fetch ``pv.csv`` into ``root``; raises :class:`DataUnavailableError` without internet."""
    return fetch(URL, Path(root) / FILE, SHA256)


def read_table(path: Path) -> np.ndarray:
    """The five signal columns of ``pv.csv`` as a float64 array (rows × 5)."""
    table = read_data_file(path, partial(np.genfromtxt, delimiter=",", skip_header=1))
    if table.ndim != 2 or table.shape[1] < 5:
        raise corrupt(path, "is not the plane-vibration CSV (expected at least 5 numeric columns)")
    signals = table[:, :5]
    if not np.isfinite(signals).all():
        raise corrupt(path, "has missing values in the five signal columns")
    return signals


@dataclass
class WindowSet:
    """Windows of one split: inputs ``x`` (W × 64 × 5), gaps ``dt`` (W × 64) from each input to its
    target, next-step targets ``y`` (W × 64 × 5), forecast targets ``forecast`` (W × 8 × 5) and the
    input indices (W × 64, positions in the original series)."""

    x: torch.Tensor
    dt: torch.Tensor
    y: torch.Tensor
    forecast: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, rows: slice | torch.Tensor) -> "WindowSet":
        return WindowSet(self.x[rows], self.dt[rows], self.y[rows], self.forecast[rows], self.index[rows])


def make_windows(series: np.ndarray, keep: float = 0.9, seed: int = 1, drop_last: int = 100
                 ) -> dict[str, WindowSet]:
    """Irregular train / validation / test windows (float32) from a (rows × features) series, z-scored."""
    series = (series - series.mean(0)) / series.std(0)
    usable = len(series) - drop_last
    if usable < 4 * WINDOW + FORECAST:
        raise ValueError(f"series of {len(series)} rows is too short for 2:1:1 splits of {WINDOW}-sample windows")
    kept_count = math.ceil(keep * usable)
    kept = np.sort(np.random.RandomState(seed).choice(usable, kept_count, replace=False))
    half, quarter = kept_count // 2, kept_count // 4
    parts = {"train": kept[:half], "val": kept[half:half + quarter], "test": kept[half + quarter:]}
    data = torch.from_numpy(series).float()  # PyTorch's default dtype, as the models
    out = {}
    for name, idx in parts.items():
        n_windows = len(idx) // WINDOW
        windows = torch.from_numpy(idx[: n_windows * WINDOW].reshape(n_windows, WINDOW))
        inputs = windows[:, :-1]
        gaps = torch.diff(windows, dim=1).float()
        ahead = (inputs[:, -1:] + torch.arange(1, FORECAST + 1)).clamp(max=len(series) - 1)
        out[name] = WindowSet(data[inputs], gaps, data[windows[:, 1:]], data[ahead], inputs)
    return out


def load_plane_vibration(root: Path, download_if_missing: bool = True, seed: int = 1) -> dict[str, WindowSet]:
    """The train / val / test windows of ``<root>/f16_gvt/pv.csv`` (downloaded if missing)."""
    path = Path(root) / FILE
    if not is_data_file(path):
        if not download_if_missing:
            raise DataUnavailableError(f"plane-vibration file missing: {path} (download it from {URL})")
        download(root)
    return make_windows(read_table(path), seed=seed)
