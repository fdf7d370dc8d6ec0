"""Node-classification graphs of chapter 4 through PyTorch Geometric's dataset classes.

Cora, CiteSeer and PubMed (``Planetoid``), Amazon Computers and Photo (``Amazon``) and Coauthor
CS (``Coauthor``). Raw files are taken from the data root (``planetoid/``, ``amazon_computers/``,
``amazon_photo/``, ``coauthor_cs/``; the offline copies' layout) and copied into the folder layout
PyG expects under a writable cache, where PyG writes its processed files; where they are absent
PyG downloads them (machines with internet). The data root itself is never written to.

The split protocol of GRAND / GRAND++ (REFERENCE.md §2 and §2b): keep the largest connected
component; draw a development set of 1500 random nodes (5000 for Coauthor CS); take ``k``
labelled nodes per class from it for training, the rest of it for validation; every other node
is a test node. Seeded and reproducible.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .root import DataUnavailableError


@dataclass(frozen=True)
class GraphSource:
    pyg_class: str  # "Planetoid", "Amazon" or "Coauthor"
    pyg_name: str
    folder: str  # folder of the raw files under the data root
    raw_files: tuple[str, ...]
    development: int = 1500


def _planetoid(name: str) -> tuple[str, ...]:
    return tuple(f"ind.{name}.{part}" for part in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"))


GRAPHS = {
    "cora": GraphSource("Planetoid", "Cora", "planetoid", _planetoid("cora")),
    "citeseer": GraphSource("Planetoid", "CiteSeer", "planetoid", _planetoid("citeseer")),
    "pubmed": GraphSource("Planetoid", "PubMed", "planetoid", _planetoid("pubmed")),
    "computers": GraphSource("Amazon", "Computers", "amazon_computers", ("amazon_electronics_computers.npz",)),
    "photo": GraphSource("Amazon", "Photo", "amazon_photo", ("amazon_electronics_photo.npz",)),
    "coauthor_cs": GraphSource("Coauthor", "CS", "coauthor_cs", ("ms_academic_cs.npz",), development=5000),
}


def _source(name: str) -> GraphSource:
    if name not in GRAPHS:
        raise ValueError(f"unknown graph {name!r}; choose one of {', '.join(GRAPHS)}")
    return GRAPHS[name]


def missing(name: str, root: Path) -> list[str]:
    """Raw files of ``name`` absent from the data root (PyG downloads them where there is internet)."""
    source = _source(name)
    folder = Path(root) / source.folder
    return [str(folder / f) for f in source.raw_files if not (folder / f).is_file()]


def cache_dir() -> Path:
    """Where PyG's folders live: ``$ODEKIT_CACHE`` or ``~/.cache/odekit``, plus ``pyg``."""
    return Path(os.environ.get("ODEKIT_CACHE", Path.home() / ".cache" / "odekit")) / "pyg"


def _raw_dir(source: GraphSource, pyg_root: Path) -> Path:
    folder = source.pyg_name.capitalize() if source.pyg_class == "Amazon" else source.pyg_name
    return pyg_root / folder / "raw"


def load_graph(name: str, root: Path, pyg_root: Path | None = None):
    """The PyG ``Data`` of graph ``name``, its largest connected component only.

    Raw files found under ``root`` are copied into PyG's layout under ``pyg_root`` (default
    :func:`cache_dir`); PyG downloads what is still missing and raises where it cannot.
    """
    from torch_geometric import datasets
    from torch_geometric.transforms import LargestConnectedComponents

    source = _source(name)
    pyg_root = Path(pyg_root) if pyg_root is not None else cache_dir()
    raw_dir = _raw_dir(source, pyg_root)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for file in source.raw_files:
        found = Path(root) / source.folder / file
        if found.is_file() and not (raw_dir / file).is_file():
            shutil.copyfile(found, raw_dir / file)
    cls = getattr(datasets, source.pyg_class)
    try:
        dataset = cls(str(pyg_root), source.pyg_name)
    except Exception as err:  # PyG raises URLError/OSError/… when it cannot download
        absent = missing(name, root)
        raise DataUnavailableError(
            f"could not load {source.pyg_name} ({type(err).__name__}: {err}); "
            + (f"missing raw files: {', '.join(absent)}" if absent else "the raw files may be corrupt")
        ) from None
    return LargestConnectedComponents()(dataset[0])


@dataclass
class Split:
    """Boolean node masks of one split, and the seed that drew it."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    seed: int


def labelled_split(labels: torch.Tensor, per_class: int, development: int, seed: int) -> Split:
    """The GRAND split: ``per_class`` training nodes per class from a random development set.

    The rest of the development set is validation and every node outside it is test. A class with
    fewer than ``per_class`` nodes in the development set gives all it has.
    """
    n = len(labels)
    if development > n:
        raise ValueError(f"development set of {development} nodes is larger than the graph ({n} nodes)")
    if per_class < 1:
        raise ValueError(f"need at least one labelled node per class, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    dev = torch.randperm(n, generator=generator)[:development]
    train = torch.zeros(n, dtype=torch.bool)
    for c in labels.unique():
        members = dev[labels[dev] == c]
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
        train[chosen] = True
    in_dev = torch.zeros(n, dtype=torch.bool)
    in_dev[dev] = True
    return Split(train=train, val=in_dev & ~train, test=~in_dev, seed=seed)


def development_size(name: str) -> int:
    return _source(name).development
