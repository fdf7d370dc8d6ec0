"""The Silverbox benchmark (Wigren & Schoukens): input voltage V1 and output voltage V2.

The file is the ``sb.csv`` the heavy-ball paper's code reads (131,072 samples, header
``"V1","V2",`` and a trailing comma on every line). It is looked up under
``<data root>/silverbox/sb.csv`` and, where missing, downloaded from the authors' repository
and checked against its SHA-256.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .root import DataUnavailableError

FILE = "silverbox/sb.csv"
SHA256 = "e7076735427b0b9bbc18a2a43b78022219a76623b15b494be559dc58b0224279"
URL = "https://raw.githubusercontent.com/hedixia/HeavyBallNODE/cd1065febea8ebf51eda954734e1cbe1fd565ae9/data/sb.csv"


def missing(root: Path) -> list[str]:
    """What is missing for Silverbox under ``root`` (empty when the file is there)."""
    return [] if (Path(root) / FILE).is_file() else [f"{Path(root) / FILE} (downloads from {URL})"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(root: Path) -> Path:
    """Fetch ``sb.csv`` into ``root``; raises :class:`DataUnavailableError` without internet."""
    target = Path(root) / FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    try:
        urllib.request.urlretrieve(URL, tmp)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataUnavailableError(
            f"Silverbox is not at {target} and could not be downloaded ({err}); "
            f"fetch {URL} by hand and put it there, or point --data-dir / ODEKIT_DATA at a folder holding {FILE}"
        ) from None
    if _sha256(tmp) != SHA256:
        tmp.unlink()
        raise DataUnavailableError(f"the downloaded {URL} does not match its SHA-256; try again later")
    tmp.replace(target)
    return target


def load_silverbox(root: Path, download_if_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V1, V2)`` as float64 tensors of length 131,072."""
    path = Path(root) / FILE
    if not path.is_file():
        if not download_if_missing:
            raise DataUnavailableError(f"Silverbox file missing: {path} (download it from {URL})")
        download(root)
    table = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=(0, 1))
    if table.ndim != 2 or table.shape[1] != 2 or not np.isfinite(table).all():
        raise DataUnavailableError(f"{path} is not the Silverbox CSV (expected two numeric columns V1, V2)")
    return torch.from_numpy(table[:, 0].copy()), torch.from_numpy(table[:, 1].copy())
