"""The Silverbox benchmark (Wigren & Schoukens): input voltage V1 and output voltage V2.

The file is the ``sb.csv`` the heavy-ball paper's code reads (131,072 samples, header
``"V1","V2",`` and a trailing comma on every line). It is looked up under
``<data root>/silverbox/sb.csv`` and, where missing, downloaded from the authors' repository
and checked against its SHA-256.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from .download import fetch
from .root import DataUnavailableError, corrupt, is_data_file, read_data_file

FILE = "silverbox/sb.csv"
SHA256 = "e7076735427b0b9bbc18a2a43b78022219a76623b15b494be559dc58b0224279"
URL = "https://raw.githubusercontent.com/hedixia/HeavyBallNODE/cd1065febea8ebf51eda954734e1cbe1fd565ae9/data/sb.csv"


def missing(root: Path) -> list[str]:
    """What is missing for Silverbox under ``root`` (empty when the file is there)."""
    return [] if is_data_file(Path(root) / FILE) else [f"{Path(root) / FILE} (downloads from {URL})"]


def download(root: Path) -> Path:
    """Fetch ``sb.csv`` into ``root``; raises :class:`DataUnavailableError` without internet."""
    return fetch(URL, Path(root) / FILE, SHA256)


def load_silverbox(root: Path, download_if_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V1, V2)`` as float64 tensors of length 131,072."""
    path = Path(root) / FILE
    if not is_data_file(path):
        if not download_if_missing:
            raise DataUnavailableError(f"Silverbox file missing: {path} (download it from {URL})")
        download(root)
    table = read_data_file(path, partial(np.genfromtxt, delimiter=",", skip_header=1, usecols=(0, 1)))
    if table.ndim != 2 or table.shape[1] != 2 or not np.isfinite(table).all():
        raise corrupt(path, "is not the Silverbox CSV (expected two numeric columns V1, V2)")
    return torch.from_numpy(table[:, 0].copy()), torch.from_numpy(table[:, 1].copy())
