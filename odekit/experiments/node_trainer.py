"""Training one node-classification cell: the model of a name, full-batch training with early stopping.

Training is full-batch cross-entropy on the training nodes. After every epoch the validation
accuracy is measured; the reported test accuracy is the one at the best validation accuracy
(the authors' GRAND code). For the continuous models the early-stopping integrator also scans the
integration time: the features are decoded at ``time_points`` times in ``(0, time_multiple·T]``
and the best validation time is kept.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import graphs
from ..models.gnn import GNNClassifier
from ..models.grand import GRAND
from ..solve import METHODS, SolverError
from .node_settings import (
    BASELINE_TRAINING,
    FIXED_SPLIT_SEED,
    GRANDPP_EPOCHS,
    GRANDPP_MAX_NFE,
    MODELS,
    OPTIMIZERS,
    RESPLIT,
    SETTINGS,
    NodeClassificationConfig,
)


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
    """The network of ``model`` on dataset ``name``: GRAND family at depth ``t_end`` or a baseline of
    ``depth`` layers."""
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
    adjoint_options = ({"step_size": config.step_size} if adjoint_method and not METHODS[adjoint_method].adaptive
                       else None)
    return GRAND(in_features, classes, hidden=config.hidden or s.hidden, t_end=t_end or s.t_end,
                 attention_dim=s.attention_dim, heads=s.heads, attention_normalisation=s.attention_normalisation,
                 nonlinear=spec.nonlinear,
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
