"""Settings of the chapter-4 node-classification experiments: the authors' per-dataset GRAND
settings, what each model name means, and the config the experiments share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import graphs
from ..models.gnn import BASELINES
from ..models.grand import GRAND
from ..solve import METHODS
from .base import ExperimentConfig


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
                           500, batch_norm=True, adjoint_method="rk4", adjoint_tol_scale=14777.61,
                           edge_sampling=0.9282),
    "ogbn_arxiv": GrandSettings(162, 3.6760, 2, 32, 0.0, 0.11595, 0.0054515, 0.0, "rmsprop", 100, False, 11353.56,
                                500, batch_norm=True, adjoint_method="rk4", adjoint_tol_scale=1.0,
                                edge_sampling=0.8105),
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
MODEL_LABELS = {name: spec.label for name, spec in MODELS.items()}


@dataclass
class NodeClassificationConfig(ExperimentConfig):
    """Settings shared by the chapter-4 experiments (each adds its own grid)."""

    datasets: tuple[str, ...] = ("cora", "citeseer")
    splits: int = 100  # runs i = 0…splits−1 draw split seed i (Planetoid) — the thesis's 100 splits
    seeds: int = 20  # initialisations per split: torch seeds seed, seed + 1, … (--seed moves them)
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


# The settings that only choose the cells of a chapter-4 grid: a cell's record (node_trainer.train_cell)
# depends on its key (dataset, model, labels, T, layers, split, seed, source scale) and the other settings
# alone, so a run with more splits or another model takes the cells an earlier run finished.
GRID_FIELDS = ("datasets", "models", "splits", "seeds", "seed")


def check_config(config: NodeClassificationConfig, models: tuple[str, ...] | None = None) -> None:
    """Raise ``ValueError`` naming the first setting of ``config`` that is wrong (``models``: the models
    to check, default ``config.models``)."""
    models = config.models if models is None else models
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


def missing_graphs(root: Path, config: NodeClassificationConfig) -> list[str]:
    """The raw files of ``config.datasets`` missing under the data root."""
    return [f for name in config.datasets for f in graphs.missing(name, root)]
