"""Node-classification graphs of chapter 4 through PyTorch Geometric's dataset classes.

Cora, CiteSeer and PubMed (``Planetoid``), Amazon Computers and Photo (``Amazon``) and Coauthor
CS (``Coauthor``), and ogbn-arxiv through the ``ogb`` package (download only; its official
split, no LCC). Raw files are taken from the data root (``planetoid/``, ``amazon_computers/``,
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

import numpy as np
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


OGB_ARXIV = "ogbn_arxiv"
NAMES = (*GRAPHS, OGB_ARXIV)


def missing(name: str, root: Path) -> list[str]:
    """Raw files of ``name`` absent from the data root (PyG downloads them where there is internet)."""
    if name == OGB_ARXIV:
        found = (Path(root) / OGB_ARXIV).is_dir() or (cache_dir() / OGB_ARXIV).is_dir()
        return [] if found else [f"{Path(root) / OGB_ARXIV} (ogbn-arxiv is downloaded by the ogb package)"]
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
    ogbn-arxiv is the whole graph, made undirected, with its official split as masks.
    """
    from torch_geometric import datasets
    from torch_geometric.transforms import LargestConnectedComponents

    pyg_root = Path(pyg_root) if pyg_root is not None else cache_dir()
    if name == OGB_ARXIV:
        return _load_arxiv(Path(root), pyg_root)
    source = _source(name)
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


def _load_arxiv(root: Path, pyg_root: Path):
    """ogbn-arxiv through ``ogb``: a copy under the data root is used as is, else ``ogb`` downloads it."""
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError:
        raise DataUnavailableError("ogbn-arxiv needs the ogb package: pip install 'odekit[ogb]' (or pip install ogb)") from None
    from torch_geometric.utils import to_undirected

    target = pyg_root / OGB_ARXIV
    if (root / OGB_ARXIV).is_dir() and not target.exists():
        shutil.copytree(root / OGB_ARXIV, target)
    try:
        dataset = PygNodePropPredDataset("ogbn-arxiv", root=str(pyg_root))
    except Exception as err:  # urllib's URLError offline, or a broken archive
        # ogb asks on stdin about a half-written folder next time; leave none behind
        shutil.rmtree(target, ignore_errors=True)
        raise DataUnavailableError(
            f"could not download ogbn-arxiv ({type(err).__name__}: {err}); on a machine without internet put "
            f"the ogb folder 'ogbn_arxiv' (as ogb writes it) under {root}"
        ) from None
    data = dataset[0]
    data.y = data.y.view(-1)
    data.edge_index = to_undirected(data.edge_index, num_nodes=data.num_nodes)
    for part, indices in dataset.get_idx_split().items():
        mask = torch.zeros(data.num_nodes, dtype=torch.bool)
        mask[indices] = True
        data[f"{part}_mask"] = mask
    return data


def rewire(data, how: str):
    """GRAND-nl-rw's graph: ``"gdc"`` (personalised-PageRank diffusion, top-64 per node, α = 0.05,
    REFERENCE.md §2) or ``"two_hop"`` (edges to the neighbours' neighbours), as PyG transforms."""
    from torch_geometric import transforms

    if how == "gdc":
        transform = transforms.GDC(self_loop_weight=1.0, normalization_in="sym", normalization_out="col",
                                   diffusion_kwargs={"method": "ppr", "alpha": 0.05},
                                   sparsification_kwargs={"method": "topk", "k": 64, "dim": 0}, exact=True)
    elif how == "two_hop":
        transform = transforms.TwoHop()
    else:
        raise ValueError(f"unknown rewiring {how!r}; choose 'gdc' or 'two_hop'")
    rewired = transform(data.clone())
    # the attention weighs the new edges itself; GDC's edge weights are not used
    rewired.edge_attr = None
    return rewired


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
    fewer than ``per_class`` nodes in the development set gives all it has. The draws are the
    authors' (numpy's ``RandomState(seed)``, restarted for the per-class draws), so on the same
    largest connected component a seed gives the very split their runs used.
    """
    n = len(labels)
    if development > n:
        raise ValueError(f"development set of {development} nodes is larger than the graph ({n} nodes)")
    if per_class < 1:
        raise ValueError(f"need at least one labelled node per class, got {per_class}")
    dev = np.random.RandomState(seed).choice(n, development, replace=False)
    classes = labels.cpu().numpy()
    draw = np.random.RandomState(seed)
    chosen = []
    for c in range(int(classes.max()) + 1):
        members = dev[classes[dev] == c]
        chosen.extend(draw.choice(members, min(per_class, len(members)), replace=False))
    train = torch.zeros(n, dtype=torch.bool)
    train[torch.as_tensor(np.asarray(chosen, dtype=np.int64))] = True
    in_dev = torch.zeros(n, dtype=torch.bool)
    in_dev[torch.from_numpy(dev)] = True
    return Split(train=train, val=in_dev & ~train, test=~in_dev, seed=seed)


def official_split(data) -> Split:
    """The dataset's own split (ogbn-arxiv), from the masks :func:`load_graph` attached."""
    return Split(train=data.train_mask, val=data.valid_mask, test=data.test_mask, seed=-1)


def development_size(name: str) -> int:
    return _source(name).development
