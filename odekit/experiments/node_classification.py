"""Node classification runs shared by the chapter-4 experiments (``grand_labels``, ``grand_depth``,
``grand_variants``): the authors' settings, model construction, training with early stopping, and
one checkpointed loop over the cells of a table.

A *cell* is one training run: (dataset, model, labelled nodes per class, depth, split, seed).
Training is full-batch cross-entropy on the training nodes. After every epoch the validation
accuracy is measured; the reported test accuracy is the one at the best validation accuracy
(the authors' GRAND code). For the continuous models the early-stopping integrator also scans the
integration time: the features are decoded at ``time_points`` times in ``(0, time_multiple·T]``
and the best validation time is kept.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import graphs
from ..models.gnn import BASELINES, GNNClassifier
from ..models.grand import GRAND
from ..report.plots import pyplot
from ..solve import METHODS, SolverError
from .base import ExperimentConfig, RunContext
from .grid import run_grid


@dataclass(frozen=True)
class GrandSettings:
    """The authors' best GRAND settings for one dataset (the authors' GRAND code, ``best_params.py``)."""

    hidden: int
    t_end: float
    heads: int
    attention_dim: int
    input_dropout: float
    dropout: float
    lr: float
    weight_decay: float
    optimizer: str
    epochs: int
    initial_term: bool  # GRAND's add_source (β·X(0))
    tol_scale: float  # atol = tol_scale·1e-7, rtol = tol_scale·1e-9
    max_nfe: int
    batch_norm: bool = False
    time_multiple: float = 3.0  # earlystopxT
    adjoint_method: str | None = None  # the authors train with the adjoint where set
    adjoint_tol_scale: float = 0.0
    attention_normalisation: str = "rows"  # the authors' attention_norm_idx: 0 = "rows", 1 = "columns"
    edge_sampling: float | None = None  # the authors' hard_attention block: att_samp_pct of the edges kept in training


SETTINGS = {
    "cora": GrandSettings(80, 18.2948, 8, 128, 0.5, 0.04688, 0.022925, 0.0050769, "adamax", 100, True, 821.977, 2000,
                          attention_normalisation="columns"),
    "citeseer": GrandSettings(80, 7.8741, 8, 32, 0.68032, 0.74881, 0.0086359, 0.1, "adam", 250, True, 2.90104, 3000,
                              attention_normalisation="columns"),
    "pubmed": GrandSettings(128, 12.9423, 1, 16, 0.5, 0.07191, 0.014669, 0.0018237, "adamax", 600, True, 1991.07,
                            5000, time_multiple=5.0, adjoint_method="adaptive_heun", adjoint_tol_scale=16324.37),
    "coauthor_cs": GrandSettings(16, 3.1264, 4, 8, 0.5275, 0.68578, 0.00093429, 0.0047384, "rmsprop", 250, False,
                                 9348.98, 3000, adjoint_method="dopri5", adjoint_tol_scale=6599.13,
                                 attention_normalisation="columns"),
    "computers": GrandSettings(128, 3.2490, 4, 64, 0.59731, 0.08733, 0.0035305, 0.0076747, "adam", 100, False,
                               127.464, 500, adjoint_method="dopri5", adjoint_tol_scale=443.814, edge_sampling=0.5729),
    "photo": GrandSettings(64, 3.5824, 4, 64, 0.42903, 0.46502, 0.0055607, 0.0047078, "adam", 100, False, 2086.53,
                           500, batch_norm=True, adjoint_method="rk4", adjoint_tol_scale=14777.61, edge_sampling=0.9282),
    "ogbn_arxiv": GrandSettings(162, 3.6760, 2, 32, 0.0, 0.11595, 0.0054515, 0.0, "rmsprop", 100, False, 11353.56,
                                500, batch_norm=True, adjoint_method="rk4", adjoint_tol_scale=1.0, edge_sampling=0.8105),
}
# GRAND++'s runs (run_GNP.py) take epochs and max NFE from its command line, whose defaults are
# these, and everything else from GRAND's best settings (the authors' GRAND++ code).
GRANDPP_EPOCHS, GRANDPP_MAX_NFE = 100, 100_000
# Table 4.12: GRAND++'s depth for the low-label results of Table 4.3.
GRANDPP_T = {"cora": 18.3, "citeseer": 8.0, "pubmed": 13.0, "coauthor_cs": 4.0, "computers": 3.2, "photo": 3.6}
# The discrete baselines use the usual settings of their papers (the thesis gives none).
BASELINE_TRAINING = {"lr": 0.01, "weight_decay": 5e-4, "epochs": 200, "hidden": 64, "dropout": 0.5}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "rmsprop": torch.optim.RMSprop}
# Planetoid graphs are re-split per run; the others keep the seed-12345 split (the authors' GRAND++ code).
FIXED_SPLIT_SEED = 12345
RESPLIT = ("cora", "citeseer", "pubmed")
DATASET_LABELS = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed", "coauthor_cs": "CoauthorCS",
                  "computers": "Computers", "photo": "Photo", "ogbn_arxiv": "ogbn-arxiv"}


@dataclass(frozen=True)
class ModelSpec:
    """What a model name means: GRAND family (attention, source, rewiring) or a PyG baseline."""

    label: str
    baseline: str | None = None
    nonlinear: bool = False
    source: bool = False
    rewiring: str | None = None  # "gdc" or "two_hop"
    source_nodes: str | None = None  # "train" / "reference"; None: the config's choice
    initial_condition: str | None = None  # "mass_shift" / "plus_source"; None: the config's choice
    heavy_ball: str | None = None  # "hb" / "ghb": the second-order (heavy-ball) diffusion of HB-GRAND


MODELS = {
    "grand++-l": ModelSpec("GRAND++-l", source=True),
    # the authors' GRAND++ code: source at their nodes, X(0) = x + C; beside the thesis's model
    "grand++-l-refsrc": ModelSpec("GRAND++-l (authors' code)", source=True, source_nodes="reference",
                                  initial_condition="plus_source"),
    "grand-l": ModelSpec("GRAND-l"),
    "grand-nl": ModelSpec("GRAND-nl", nonlinear=True),
    "grand++-nl": ModelSpec("GRAND++-nl", nonlinear=True, source=True),
    "grand-nl-rw-gdc": ModelSpec("GRAND-nl-rw (gdc)", nonlinear=True, rewiring="gdc"),
    "grand++-nl-rw-gdc": ModelSpec("GRAND++-nl-rw (gdc)", nonlinear=True, source=True, rewiring="gdc"),
    "grand-nl-rw-two_hop": ModelSpec("GRAND-nl-rw (two-hop)", nonlinear=True, rewiring="two_hop"),
    "grand++-nl-rw-two_hop": ModelSpec("GRAND++-nl-rw (two-hop)", nonlinear=True, source=True, rewiring="two_hop"),
    # beyond the thesis: the heavy-ball diffusion X'' + γX' = (A − I)X (+ C), its §4.7 / ch. 6 future work
    "hb-grand-l": ModelSpec("HB-GRAND-l", heavy_ball="hb"),
    "hb-grand++-l": ModelSpec("HB-GRAND++-l", source=True, heavy_ball="hb"),
    "ghb-grand-l": ModelSpec("GHB-GRAND-l", heavy_ball="ghb"),
    "ghb-grand++-l": ModelSpec("GHB-GRAND++-l", source=True, heavy_ball="ghb"),
    "hb-grand-nl": ModelSpec("HB-GRAND-nl", nonlinear=True, heavy_ball="hb"),
    **{name: ModelSpec(label, baseline=name) for name, label in BASELINES.items()},
}


@dataclass
class NodeClassificationConfig(ExperimentConfig):
    """Settings shared by the chapter-4 experiments (each adds its own grid)."""

    datasets: tuple[str, ...] = ("cora", "citeseer")
    splits: int = 100  # runs i = 0…splits−1 draw split seed i (Planetoid) — the thesis's 100 splits
    seeds: int = 20  # initialisations per split
    epochs: int = 0  # 0: the authors' (GRAND: per dataset, the authors' GRAND code; GRAND++: 100)
    baseline_epochs: int = 200
    method: str = "dopri5"
    gradient: str = "authors"  # "authors" (adjoint where they used it), "backprop" or "adjoint"
    tol_scale: float = 0.0  # 0: the authors' per dataset; otherwise atol = s·1e-7, rtol = s·1e-9
    step_size: float = 1.0  # fixed-step and proximal methods
    max_nfe: int = 0  # 0: the authors' (GRAND: per dataset; GRAND++: 100000)
    source_nodes: str = "train"  # "train": the run's labelled nodes; "reference": the authors' GRAND++ code's choice
    source_scale: float = 1.0  # GRAND++'s C = source_scale·(x_i − x̄) (the authors' default 1)
    initial_source: float = 1.0  # X(0) = x + initial_source·C (the authors' icxb, default 1)
    initial_condition: str = "mass_shift"  # X(0) = x − c of eq. 4.11; "plus_source": x + initial_source·C (the code)
    time_multiple: float = 0.0  # early-stopping integrator horizon in units of T; 0: the authors' (3, PubMed 5)
    time_points: int = 30  # early-stopping decoding times (the authors decode after each solver step: ~30 on Cora)
    time_scan: str = "every_epoch"  # or "best_epoch": scan time once, for the best-validation epoch
    hidden: int = 0  # GRAND width; 0: the authors' per dataset (Table 4.2 uses 81 on ogbn-arxiv)
    threads: int = 0  # torch threads (0: leave torch's default)
    damping: float = 0.5  # heavy-ball models: the initial γ (trained)
    initial_velocity: str = "zero"  # heavy-ball models: M(0) = 0, or "learned" (M(0) = W X(0))
    float64: bool = False
    extra_options: dict[str, Any] = field(default_factory=dict)  # engine options (e.g. {"inner": "anderson"})


def check_config(config: NodeClassificationConfig, models: tuple[str, ...]) -> None:
    unknown = [d for d in config.datasets if d not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {', '.join(SETTINGS)}")
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose from {', '.join(METHODS)}")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if config.gradient not in ("authors", "backprop", "adjoint"):
        raise ValueError(f"gradient must be 'authors', 'backprop' or 'adjoint', got {config.gradient!r}")
    if config.source_nodes not in ("train", "reference"):
        raise ValueError(f"source_nodes must be 'train' or 'reference', got {config.source_nodes!r}")
    if config.initial_condition not in GRAND.INITIAL_CONDITIONS:
        raise ValueError(f"initial_condition must be one of {GRAND.INITIAL_CONDITIONS}, "
                         f"got {config.initial_condition!r}")
    if config.initial_velocity not in GRAND.VELOCITIES:
        raise ValueError(f"initial_velocity must be one of {GRAND.VELOCITIES}, got {config.initial_velocity!r}")
    if not 0 < config.damping < GRAND.DAMPING_BOUND:
        raise ValueError(f"damping (the initial γ) must lie in (0, {GRAND.DAMPING_BOUND:g}), got {config.damping}")
    if config.time_scan not in ("every_epoch", "best_epoch"):
        raise ValueError(f"time_scan must be 'every_epoch' or 'best_epoch', got {config.time_scan!r}")
    if config.splits < 1 or config.seeds < 1 or config.time_points < 1:
        raise ValueError("splits, seeds and time_points must be at least 1")


class GraphCache:
    """Loaded graphs (and their rewired versions), so a grid of cells loads each once."""

    def __init__(self, root: Path, float64: bool) -> None:
        self.root, self.dtype = root, torch.float64 if float64 else torch.float32
        self._graphs: dict[tuple[str, str | None], Any] = {}

    def get(self, name: str, rewiring: str | None = None):
        key = (name, rewiring)
        if key not in self._graphs:
            if rewiring is None:
                data = graphs.load_graph(name, self.root)
                data.x = data.x.to(self.dtype)
            else:
                data = graphs.rewire(self.get(name), rewiring)
            self._graphs[key] = data
        return self._graphs[key]


def split_for(name: str, data, per_class: int, run: int):
    """The split of run ``run`` (the authors' GRAND++ code): re-drawn per run for Planetoid, else fixed."""
    if name == "ogbn_arxiv":
        return graphs.official_split(data)
    seed = run if name in RESPLIT else FIXED_SPLIT_SEED
    return graphs.labelled_split(data.y, per_class, graphs.development_size(name), seed)


def build_model(config: NodeClassificationConfig, name: str, model: str, t_end: float | None, depth: int,
                in_features: int, classes: int):
    """The network of ``model`` on dataset ``name``: GRAND family at depth ``t_end`` or a baseline of ``depth`` layers."""
    spec = MODELS[model]
    if spec.baseline is not None:
        b = BASELINE_TRAINING
        return GNNClassifier(spec.baseline, in_features, classes, depth=depth, hidden=b["hidden"], dropout=b["dropout"])
    s = SETTINGS[name]
    tol = config.tol_scale or s.tol_scale
    options = dict(config.extra_options)
    if not METHODS[config.method].adaptive:
        options.setdefault("step_size", config.step_size)
    gradient = config.gradient
    if gradient == "authors":
        gradient = "adjoint" if s.adjoint_method else "backprop"
    adjoint_method = s.adjoint_method if config.gradient == "authors" else None
    adjoint_tol = s.adjoint_tol_scale if adjoint_method else tol
    adjoint_options = {"step_size": config.step_size} if adjoint_method and not METHODS[adjoint_method].adaptive else None
    return GRAND(in_features, classes, hidden=config.hidden or s.hidden, t_end=t_end or s.t_end, attention_dim=s.attention_dim,
                 heads=s.heads, attention_normalisation=s.attention_normalisation, nonlinear=spec.nonlinear,
                 # the authors' nonlinear runs use the plain block, not hard attention (the authors' GRAND++ code)
                 edge_sampling=None if spec.nonlinear else s.edge_sampling,
                 initial_term=s.initial_term and not spec.source,
                 source=spec.source, source_scale=config.source_scale, initial_source=config.initial_source,
                 initial_condition=spec.initial_condition or config.initial_condition,
                 input_dropout=s.input_dropout, dropout=s.dropout, batch_norm=s.batch_norm, cached=True,
                 heavy_ball=spec.heavy_ball, damping=config.damping, initial_velocity=config.initial_velocity,
                 method=config.method, rtol=tol * 1e-9, atol=tol * 1e-7, gradient=gradient, options=options,
                 adjoint_method=adjoint_method, adjoint_rtol=adjoint_tol * 1e-9, adjoint_atol=adjoint_tol * 1e-7,
                 adjoint_options=adjoint_options,
                 max_nfe=config.max_nfe or (GRANDPP_MAX_NFE if spec.source else s.max_nfe))


def _optimizer(config: NodeClassificationConfig, name: str, model: str, net: torch.nn.Module):
    if MODELS[model].baseline is not None:
        return torch.optim.Adam(net.parameters(), lr=BASELINE_TRAINING["lr"],
                                weight_decay=BASELINE_TRAINING["weight_decay"]), config.baseline_epochs
    s = SETTINGS[name]
    epochs = config.epochs or (GRANDPP_EPOCHS if MODELS[model].source else s.epochs)
    return OPTIMIZERS[s.optimizer](net.parameters(), lr=s.lr, weight_decay=s.weight_decay), epochs


def _accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Accuracy on ``mask`` (for stacked logits, one accuracy per leading index)."""
    return (logits[..., mask, :].argmax(-1) == labels[mask]).to(torch.float64).mean(-1)


@dataclass
class Evaluation:
    val: float
    test: float
    time: float | None  # the integration time chosen by the early-stopping integrator


def evaluate(net: torch.nn.Module, data, split, scan: torch.Tensor | None) -> Evaluation:
    """Validation and test accuracy; with ``scan`` (times), at the best validation time among them."""
    net.eval()
    with torch.no_grad():
        if scan is None or not isinstance(net, GRAND):
            logits = net(data.x, data.edge_index)
            return Evaluation(_accuracy(logits, data.y, split.val).item(), _accuracy(logits, data.y, split.test).item(),
                              None)
        logits = net(data.x, data.edge_index, times=scan)[1:]
        val = _accuracy(logits, data.y, split.val)
        best = int(torch.argmax(val))  # first of equal maxima: the shallowest
        return Evaluation(val[best].item(), _accuracy(logits[best], data.y, split.test).item(), scan[best + 1].item())


@dataclass
class CellResult:
    test: float | None
    val: float | None
    best_epoch: int | None
    best_time: float | None
    nfe_forward: float  # mean per training epoch
    nfe_backward: float
    seconds: float
    status: str  # "ok", or why the run failed (the thesis's NA)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_cell(config: NodeClassificationConfig, name: str, data, split, model: str, seed: int,
               t_end: float | None = None, depth: int = 2, source_mask: torch.Tensor | None = None) -> CellResult:
    """Train one model on one split; a solver failure (NFE cap, step underflow, …) is a result, not a crash."""
    torch.manual_seed(seed)
    classes = int(data.y.max()) + 1
    net = build_model(config, name, model, t_end, depth, data.num_features, classes).to(data.x.dtype)
    if isinstance(net, GRAND) and net.source:
        net.set_source_nodes(split.train if source_mask is None else source_mask)
    optimizer, epochs = _optimizer(config, name, model, net)
    scan = None
    if isinstance(net, GRAND):
        multiple = config.time_multiple or SETTINGS[name].time_multiple
        grid = torch.linspace(0.0, multiple * net.t_end, config.time_points + 1, dtype=data.x.dtype,
                              device=data.x.device)
        # T itself is always scanned, so the scan can only improve on the epoch's own score
        scan = torch.unique(torch.cat([grid, grid.new_tensor([net.t_end])]))
    every_epoch = scan if config.time_scan == "every_epoch" else None
    best, best_epoch, best_state = None, None, None
    nfe_f = nfe_b = 0.0
    start = time.perf_counter()
    try:
        for epoch in range(epochs):
            net.train()
            optimizer.zero_grad()
            loss = F.cross_entropy(net(data.x, data.edge_index)[split.train], data.y[split.train])
            loss.backward()
            optimizer.step()
            if isinstance(net, GRAND):
                nfe_f += net.stats.nfe
                nfe_b += net.stats.nfe_backward
            result = evaluate(net, data, split, every_epoch)
            if best is None or result.val > best.val:
                best, best_epoch = result, epoch
                if every_epoch is None and scan is not None:
                    best_state = copy.deepcopy(net.state_dict())
        if best_state is not None:
            net.load_state_dict(best_state)
            best = evaluate(net, data, split, scan)
    except SolverError as err:
        return CellResult(None, None, None, None, nfe_f / max(1, epochs), nfe_b / max(1, epochs),
                          time.perf_counter() - start, f"solver failed: {type(err).__name__}: {str(err)[:200]}")
    return CellResult(best.test, best.val, best_epoch, best.time, nfe_f / epochs, nfe_b / epochs,
                      time.perf_counter() - start, "ok")


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    per_class: int
    run: int  # split index
    seed: int
    t_end: float | None = None  # GRAND family depth (None: the dataset's default)
    depth: int = 2  # baseline layers

    @property
    def key(self) -> str:
        return f"{self.dataset}|{self.model}|k={self.per_class}|T={self.t_end}|L={self.depth}|run={self.run}|seed={self.seed}"


def cell_record(config: NodeClassificationConfig, data_root: Path, cell: Cell) -> dict:
    """Train one cell on its split: its :class:`CellResult` and its coordinates (the grid's work function)."""
    spec = MODELS[cell.model]
    data = _graphs(data_root, config.float64).get(cell.dataset, spec.rewiring)
    split = split_for(cell.dataset, data, cell.per_class, cell.run)
    source_mask = None
    if spec.source and (spec.source_nodes or config.source_nodes) == "reference" and cell.dataset in RESPLIT:
        source_mask = split_for(cell.dataset, data, cell.per_class, FIXED_SPLIT_SEED).train
    result = train_cell(config, cell.dataset, data, split, cell.model, cell.seed, cell.t_end, cell.depth,
                        source_mask)
    return {**result.as_dict(), **dataclasses.asdict(cell)}


@functools.lru_cache(maxsize=2)
def _graphs(root: Path, float64: bool) -> GraphCache:
    """One graph cache per process and data root: a process (or Ray worker) loads each graph once."""
    return GraphCache(root, float64)


def describe_cell(cell: Cell, record: dict) -> str:
    spec = MODELS[cell.model]
    shown = "NA" if record["test"] is None else f"{100 * record['test']:.1f}%"
    depth = f"L={cell.depth}" if spec.baseline else f"T={cell.t_end or SETTINGS[cell.dataset].t_end:g}"
    return (f"{cell.dataset} {spec.label} k={cell.per_class} {depth} run {cell.run}: test {shown} "
            f"({record['seconds']:.0f} s, {record['status']})")


def run_cells(config: NodeClassificationConfig, ctx: RunContext, cells: list[Cell], description: str) -> dict:
    """Train every cell not yet in the checkpoint on the run's executor; returns ``{cell.key: record}``."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return run_grid(ctx, cells, functools.partial(cell_record, config, ctx.data_root), description, describe_cell)


def summarise(results: list[dict]) -> tuple[float | None, float | None, int, int]:
    """Mean and std (in %) of the test accuracy of successful runs (std ``None`` for a single run), their
    count, and the failures."""
    ok = [100 * r["test"] for r in results if r["test"] is not None]
    failed = len(results) - len(ok)
    if not ok:
        return None, None, 0, failed
    mean = sum(ok) / len(ok)
    std = math.sqrt(sum((v - mean) ** 2 for v in ok) / (len(ok) - 1)) if len(ok) > 1 else None  # one run: no spread
    return mean, std, len(ok), failed


def format_accuracy(mean: float | None, std: float | None, failed: int = 0) -> str:
    if mean is None:
        return "NA"
    text = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return text + (f" ({failed} failed)" if failed else "")


def runs_of(config: NodeClassificationConfig) -> list[tuple[int, int]]:
    """(split, seed) pairs of the protocol: ``splits`` × ``seeds``."""
    return [(run, seed) for run in range(config.splits) for seed in range(config.seeds)]


def depth_cells(config, depths, per_class: int) -> list[Cell]:
    """Every model of ``config`` integrated to each of ``depths`` at ``per_class`` labels, on every split."""
    return [Cell(d, m, per_class, run, seed, t_end=float(t)) for d in config.datasets for t in depths
            for run, seed in runs_of(config) for m in config.models]


def label_cells(config, labels) -> list[Cell]:
    """Every model of ``config`` at each of ``labels`` labelled nodes per class and its dataset's T:
    Table 4.12's for the models with a source, the authors' GRAND T otherwise."""
    return [Cell(d, m, k, run, seed, t_end=GRANDPP_T.get(d) if MODELS[m].source else None)
            for d in config.datasets for k in labels for run, seed in runs_of(config) for m in config.models]


def depth_at_20_labels(t: float) -> str:
    return f"T={t:g}, 20 labels/class"


def labels_text(k: float) -> str:
    return f"{k:g} label{'s' if k != 1 else ''}/class"


def group(done: dict, cells: list[Cell], x_of) -> dict[tuple[str, str, float], list[dict]]:
    """Results of ``cells`` by (dataset, model, x) where ``x_of(cell)`` is the swept quantity."""
    grouped: dict[tuple[str, str, float], list[dict]] = {}
    for cell in cells:
        grouped.setdefault((cell.dataset, cell.model, x_of(cell)), []).append(done[cell.key])
    return grouped


def thesis_cell(table: dict, model: str, dataset: str, x: float):
    """The thesis's (mean, std) for a cell, ``None`` for its NA, or ``"absent"`` where it has no entry."""
    row = table.get(model.replace("-refsrc", ""), {}).get(dataset, {})
    return row.get(int(x) if float(x).is_integer() else x, "absent")


def metric_key(dataset: str, model: str, x_label: str) -> str:
    return f"{DATASET_LABELS[dataset]}, {x_label}, {MODELS[model].label} (%)"


def paired_accuracies(done: dict, cells: list[Cell], challenger: str, base: str, x_of
                      ) -> dict[tuple[str, float], list[tuple[float, float]]]:
    """Test accuracies (%) of ``challenger`` and ``base`` on the same split and seed, by (dataset, x);
    pairs where either run failed are left out."""
    by_key = {(c.dataset, c.model, x_of(c), c.run, c.seed): done[c.key]["test"] for c in cells if c.key in done}
    pairs: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for (dataset, model, x, run, seed), ours in by_key.items():
        theirs = by_key.get((dataset, base, x, run, seed))
        if model == challenger and ours is not None and theirs is not None:
            pairs.setdefault((dataset, x), []).append((100 * ours, 100 * theirs))
    return pairs


def mean_accuracies(grouped: dict) -> dict[tuple[str, str, float], float]:
    """Mean test accuracy (%) of each (dataset, model, x) of ``grouped`` that has a successful run."""
    means = {key: summarise(results)[0] for key, results in grouped.items()}
    return {key: mean for key, mean in means.items() if mean is not None}


def _shared(means: dict, dataset: str, a: str, b: str) -> list[float]:
    """The swept values at which both models have a mean on ``dataset``, in order."""
    return sorted({x for d, m, x in means if d == dataset and m == a} & {x for d, m, x in means if d == dataset and m == b})


def model_gaps(means: dict, better: str, worse: str, xs: Callable[[str, list[float]], list[float]],
               x_name: str = "") -> list[tuple[str, float, float]]:
    """``(where, better's mean, worse's mean)`` on every dataset at the ``xs(dataset, swept values)`` both have."""
    return [(f"{DATASET_LABELS[dataset]} {x_name}{x:g}", means[(dataset, better, x)], means[(dataset, worse, x)])
            for dataset in dict.fromkeys(d for d, _, _ in means)
            for x in xs(dataset, _shared(means, dataset, better, worse))]


def accuracy_lost(means: dict, model: str, baseline: str) -> list[tuple[str, float, float]]:
    """``(where, baseline's loss, model's loss)``: accuracy points each loses from the shallowest to the
    deepest ``T`` both ran, per dataset — the pairs of the claim that ``model`` holds its accuracy better."""
    pairs = []
    for dataset in dict.fromkeys(d for d, _, _ in means):
        shared = _shared(means, dataset, model, baseline)
        if len(shared) > 1:
            lost = {m: means[(dataset, m, shared[0])] - means[(dataset, m, shared[-1])] for m in (model, baseline)}
            pairs.append((f"{DATASET_LABELS[dataset]} T={shared[0]:g}→{shared[-1]:g}", lost[baseline], lost[model]))
    return pairs


def report_sweep(ctx: RunContext, grouped: dict, table: dict, *, name: str, x_name: str, x_label, caption: str,
                 figure_caption: str) -> None:
    """One table (ours beside the thesis, per cell), metrics, and a figure of accuracy against the swept ``x``."""
    rows = []
    for (dataset, model, x), results in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        mean, std, n, failed = summarise(results)
        ref = thesis_cell(table, model, dataset, x)
        ref_text = "—" if ref == "absent" else "NA" if ref is None else f"{ref[0]:.2f} ± {ref[1]:.2f}"
        verdict = ""
        if mean is not None and ref not in ("absent", None):
            verdict = "within ±1 std" if abs(mean - ref[0]) <= ref[1] else f"{mean - ref[0]:+.2f}"
        nfe = [r["nfe_forward"] for r in results if r["nfe_forward"]]
        rows.append([DATASET_LABELS[dataset], MODELS[model].label, f"{x:g}", format_accuracy(mean, std, failed), n,
                     ref_text, verdict, f"{sum(nfe) / len(nfe):.0f}" if nfe else "",
                     "; ".join(sorted({r["status"] for r in results if r["status"] != "ok"}))[:160]])
        if mean is not None:
            ctx.metric(metric_key(dataset, model, x_label(x)), round(mean, 2))
        elif failed:
            ctx.metric(metric_key(dataset, model, x_label(x)), "NA (solver failed)")
    ctx.table(name, ["dataset", "model", x_name, "odekit test acc (%)", "runs", "thesis", "vs thesis",
                     "forward NFE / epoch", "failures"], rows, caption)
    _plot_sweep(ctx, grouped, table, name, x_name, figure_caption)


def _plot_sweep(ctx: RunContext, grouped: dict, table: dict, name: str, x_name: str, caption: str) -> None:
    plt = pyplot()
    datasets = sorted({d for d, _, _ in grouped})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        models = sorted({m for d, m, _ in grouped if d == dataset})
        for i, model in enumerate(models):
            xs = sorted(x for d, m, x in grouped if d == dataset and m == model)
            stats = [summarise(grouped[(dataset, model, x)]) for x in xs]
            shown = [(x, s[0], s[1] or 0.0) for x, s in zip(xs, stats) if s[0] is not None]
            colour = f"C{i}"
            if shown:
                ax.errorbar([p[0] for p in shown], [p[1] for p in shown], yerr=[p[2] for p in shown], color=colour,
                            marker="o", capsize=3, label=f"{MODELS[model].label} (odekit)")
            thesis = [(x, thesis_cell(table, model, dataset, x)) for x in xs]
            thesis = [(x, v[0]) for x, v in thesis if v not in ("absent", None)]
            if thesis and "-refsrc" not in model:
                ax.plot([p[0] for p in thesis], [p[1] for p in thesis], color=colour, linestyle="--", marker="x",
                        alpha=0.6, label=f"{MODELS[model].label} (thesis)")
        ax.set_xscale("log", base=2)
        ticks = sorted({x for d, _, x in grouped if d == dataset})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_title(DATASET_LABELS[dataset])
        ax.set_xlabel(x_name)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(name, fig, caption)
