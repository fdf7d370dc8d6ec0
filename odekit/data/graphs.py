"""Node-classification graphs of chapter 4 through PyTorch Geometric's dataset classes.

Cora, CiteSeer and PubMed (``Planetoid``), Amazon Computers and Photo (``Amazon``) and Coauthor
CS (``Coauthor``), and ogbn-arxiv through the ``ogb`` package (download only; its official
split, no LCC). Raw files are taken from the data root (``planetoid/``, ``amazon_computers/``,
``amazon_photo/``, ``coauthor_cs/``; the offline copies' layout) and copied into the folder layout
PyG expects under a writable cache, where PyG writes its processed files; where they are absent
PyG downloads them (machines with internet). The data root itself is never written to. A record
beside the cache's ``raw/`` folder (``odekit_raw.json``) holds the size and sha256 of the copies and
of the files of the last successful build: when the data root's files differ from the copies, the
copies are replaced and PyG's ``processed/`` folder deleted, so that an updated, corrupted or
restored file in the data root is always the one loaded, and a failure names the file that changed.

The split protocol of GRAND / GRAND++ (the authors' GRAND and GRAND++ code): keep the largest connected
component; draw a development set of 1500 random nodes (5000 for Coauthor CS); take ``k``
labelled nodes per class from it for training, the rest of it for validation; every other node
is a test node. Seeded and reproducible.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .download import file_digest
from .root import (
    DataCorruptError,
    DataError,
    DataPermissionError,
    DataUnavailableError,
    describe_error,
    is_data_file,
    reading,
)

RECORD = "odekit_raw.json"
Fingerprints = dict[str, dict[str, int | str]]  # raw file name → {"size": bytes, "sha256": hex digest}


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
    return [str(folder / f) for f in source.raw_files if not is_data_file(folder / f)]


def cache_dir() -> Path:
    """Where PyG's folders live: ``$ODEKIT_CACHE`` or ``~/.cache/odekit``, plus ``pyg``."""
    return Path(os.environ.get("ODEKIT_CACHE", Path.home() / ".cache" / "odekit")) / "pyg"


def _dataset_dir(source: GraphSource, pyg_root: Path) -> Path:
    """PyG's folder of one dataset, holding ``raw/`` and ``processed/``."""
    return pyg_root / (source.pyg_name.capitalize() if source.pyg_class == "Amazon" else source.pyg_name)


def _fingerprints(source: GraphSource, folder: Path) -> Fingerprints:
    """Size and sha256 of each raw file of ``source`` that the data root's ``folder`` has."""
    prints = {}
    for file in source.raw_files:
        path = folder / file
        if is_data_file(path):
            with reading(path):
                prints[file] = {"size": path.stat().st_size, "sha256": file_digest(path)}
    return prints


def _read_record(dataset_dir: Path) -> dict[str, Fingerprints]:
    """The cache's record: ``{"copied": …, "built": …}``; empty where absent or unreadable (then rebuilt)."""
    try:
        record = json.loads((dataset_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    parts_ok = isinstance(record, dict) and all(isinstance(record.get(k, {}), dict) for k in ("copied", "built"))
    return record if parts_ok else {}


def _write_record(dataset_dir: Path, record: dict[str, Fingerprints]) -> None:
    tmp = dataset_dir / (RECORD + ".part")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(dataset_dir / RECORD)


def _refresh_cache(folder: Path, dataset_dir: Path, current: Fingerprints, record: dict[str, Fingerprints]) -> None:
    """Replace the cache's raw copies by the data root's files where they differ, and drop PyG's processed files.

    A copy counts as current when the record lists the data root file's size and digest for it and
    it still has that size. Copies of files the data root no longer has are deleted, so that PyG
    downloads them afresh.
    """
    raw = dataset_dir / "raw"
    copied = record.get("copied")
    fresh = copied == current and all(
        (raw / f).is_file() and (raw / f).stat().st_size == p["size"] for f, p in current.items()
    )
    if fresh:
        return
    raw.mkdir(parents=True, exist_ok=True)
    for file in copied or {}:
        if file not in current:
            (raw / file).unlink(missing_ok=True)
    for file in current:
        shutil.copyfile(folder / file, raw / file)
    # processed files of other raw files would be loaded as they are, and a failed build must not leave them
    shutil.rmtree(dataset_dir / "processed", ignore_errors=True)
    _write_record(dataset_dir, {"copied": current, "built": record.get("built", {})})


def _cache_error(dataset_dir: Path, err: OSError) -> DataError:
    kind = DataPermissionError if isinstance(err, PermissionError) else DataError
    return kind(f"cannot write PyG's cache {dataset_dir} ({describe_error(err)}); make it writable, or set "
                "ODEKIT_CACHE to a writable folder")


def _load_error(source: GraphSource, name: str, root: Path, dataset_dir: Path, current: Fingerprints,
                built: Fingerprints, err: Exception) -> DataError:
    """Why ``source`` did not load: raw files missing, data-root files that changed or may be corrupt, or the cache."""
    failure = f"could not load {source.pyg_name} ({describe_error(err)})"
    absent = missing(name, root)
    if absent:
        return DataUnavailableError(f"{failure}; missing raw files: {', '.join(absent)} (PyG downloads them where "
                                    f"there is internet; its cache is {dataset_dir})")
    folder = Path(root) / source.folder
    if built:
        suspects = [str(folder / f) for f in current if built.get(f) != current[f]]
        blame = f"{', '.join(suspects)} changed since the last good build of the cache and may be corrupt"
    else:
        suspects = [str(folder / f) for f in current]
        blame = f"one of {', '.join(suspects)} may be corrupt"
    if not suspects:
        return DataCorruptError(f"{failure}; the data root's raw files are unchanged since the last good build, so "
                                f"PyG's cache {dataset_dir} is broken: delete that folder to rebuild it")
    return DataCorruptError(f"{failure}; {blame}: restore a good copy, delete it so that PyG downloads it (where "
                            "there is internet), or point --data-dir / ODEKIT_DATA at a folder with good copies "
                            f"(PyG's cache {dataset_dir} is rebuilt from them on the next load)")


def load_graph(name: str, root: Path, pyg_root: Path | None = None):
    """The PyG ``Data`` of graph ``name``, its largest connected component only.

    Raw files found under ``root`` are copied into PyG's layout under ``pyg_root`` (default
    :func:`cache_dir`), again whenever they change there; PyG downloads what is still missing.
    Failures raise :class:`DataUnavailableError` (files missing), :class:`DataCorruptError` (naming
    the data-root files that may be corrupt, or the cache folder) or :class:`DataPermissionError`.
    ogbn-arxiv is the whole graph, made undirected, with its official split as masks.
    """
    from torch_geometric import datasets
    from torch_geometric.transforms import LargestConnectedComponents

    pyg_root = Path(pyg_root) if pyg_root is not None else cache_dir()
    if name == OGB_ARXIV:
        return _load_arxiv(Path(root), pyg_root)
    source = _source(name)
    folder, dataset_dir = Path(root) / source.folder, _dataset_dir(source, pyg_root)
    current = _fingerprints(source, folder)
    with _cache_lock(dataset_dir):
        record = _read_record(dataset_dir)
        try:
            _refresh_cache(folder, dataset_dir, current, record)
        except OSError as err:
            raise _cache_error(dataset_dir, err) from err
        cls = getattr(datasets, source.pyg_class)
        try:
            dataset = cls(str(pyg_root), source.pyg_name)
        except Exception as err:  # PyG raises URLError/OSError/… when it cannot download, pickle errors on bad files
            raise _load_error(source, name, root, dataset_dir, current, record.get("built", {}), err) from err
        if record.get("built") != current:
            try:
                _write_record(dataset_dir, {"copied": current, "built": current})
            except OSError as err:
                raise _cache_error(dataset_dir, err) from err
    return LargestConnectedComponents()(dataset[0])


@contextlib.contextmanager
def _cache_lock(dataset_dir: Path) -> Iterator[None]:
    """Hold the cache of one dataset while it is checked and (re)built: processes starting together
    (the workers of a Ray run) would otherwise read each other's half-written processed files."""
    try:
        dataset_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = open(dataset_dir.parent / f".{dataset_dir.name}.lock", "a")
    except OSError as err:
        raise _cache_error(dataset_dir, err) from err
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _load_arxiv(root: Path, pyg_root: Path):
    """ogbn-arxiv through ``ogb``: a copy under the data root is used as is, else ``ogb`` downloads it."""
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError:
        raise DataUnavailableError(
            "ogbn-arxiv needs the ogb package: pip install 'odekit[ogb]' (or pip install ogb)") from None
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
    the authors' GRAND code) or ``"two_hop"`` (edges to the neighbours' neighbours), as PyG transforms."""
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
