"""``adjoint_decay``: how far back the adjoint reaches in trained ODE-RNN hybrids (Fig 3.5, §3.4.2).

Train ODE-RNN, HBNODE-RNN and GHBNODE-RNN on Walker2d (where its trajectories are present, as
the thesis) or on the plane-vibration data, then back-propagate the loss of the **last**
prediction of each test window and record, at every observation time ``t``, the adjoint norm
``‖∂L/∂h_t‖`` (ODE-RNN) and ``‖[∂L/∂h_t, ∂L/∂m_t]‖`` (heavy-ball models), against ``T − t``.
The thesis's claim: the ODE-RNN adjoint vanishes quickly as ``T − t`` grows, the heavy-ball
ones decay much more slowly (eq. 3.76 ff.).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import plane_vibration as plane_data
from ..data import walker2d as walker_data
from ..data.plane_vibration import WindowSet
from ..report.plots import pyplot
from ..report.records import Key, Metric
from .base import Experiment, ExperimentConfig, RunContext
from .claims import Ordering, judge_orderings
from .grid import run_grid, unfinished_path
from .hybrid_training import (
    LABELS,
    HybridCell,
    HybridConfig,
    HybridTask,
    build_model,
    load_splits,
    plan_of,
    train_hybrid,
)
from .plane_vibration import TASK as PLANE
from .plane_vibration import PlaneVibrationConfig
from .walker2d import TASK as WALKER
from .walker2d import Walker2dConfig

DATASETS = {"walker2d": (WALKER, Walker2dConfig), "plane_vibration": (PLANE, PlaneVibrationConfig)}


@dataclass
class AdjointDecayConfig(ExperimentConfig):
    dataset: str = "auto"  # walker2d where its files are present, else plane_vibration
    models: tuple[str, ...] = ("odernn", "hbnode", "ghbnode")
    epochs: int = 100
    batch_size: int = 64
    train_windows: int = 0
    test_windows: int = 256
    tol: float = 1e-5


def _missing(root, config) -> list[str]:
    """Nothing is missing when either dataset is there; otherwise the plane-vibration file (it downloads)."""
    return [] if not walker_data.missing(root) else plane_data.missing(root)


def _dataset(config: AdjointDecayConfig, ctx: RunContext) -> str:
    if config.dataset == "auto":
        return "walker2d" if not walker_data.missing(ctx.data_root) else "plane_vibration"
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose auto, {', '.join(DATASETS)}")
    return config.dataset


def adjoint_norms(model, data: WindowSet) -> dict[str, np.ndarray]:
    """Mean over windows of ``‖∂L/∂h_t‖`` and ``‖∂L/∂(h_t, m_t)‖`` at every observation; ``L`` is the
    squared error of each window's last prediction (summed, so each window's adjoint is its own)."""
    predictions, states = model.trajectory(data.x, data.dt)
    for parts in states:
        for part in parts:
            part.retain_grad()
    (predictions[:, -1] - data.y[:, -1]).square().sum().backward()
    h = np.array([states[j][0].grad.norm(dim=1).mean().item() for j in range(len(states))])
    full = np.array([torch.cat([p.grad for p in states[j]], dim=1).norm(dim=1).mean().item()
                     for j in range(len(states))])
    return {"h": h, "state": full}


def decay_record(task: HybridTask, config: HybridConfig, train: WindowSet, test: WindowSet, out: Path,
                 cell: HybridCell) -> dict:
    """Train one hybrid (the grid's work function; an unfinished training is kept under the run folder
    ``out``), then its adjoint norms on ``test``: its per-epoch history, ``T − t`` and the norms at
    every observation."""
    model = build_model(task, cell.kind, config)
    history = train_hybrid(model, LABELS[cell.kind], train, test, plan_of(task, config),
                           resume=unfinished_path(out, cell))
    gaps = test.dt.double()
    # T − t of every observation: the time from it to the last prediction, averaged over windows
    remaining = gaps.flip(1).cumsum(1).flip(1).mean(0).tolist()
    norms = adjoint_norms(model, test)
    return {"history": history, "remaining": remaining, "h": norms["h"].tolist(), "state": norms["state"].tolist()}


def run(config: AdjointDecayConfig, ctx: RunContext) -> None:
    name = _dataset(config, ctx)
    task, config_class = DATASETS[name]
    unknown = [m for m in config.models if m not in task.sizes]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(task.sizes)}")
    task_config = config_class(profile=config.profile, seed=config.seed, models=config.models, epochs=config.epochs,
                               batch_size=config.batch_size, train_windows=config.train_windows,
                               test_windows=config.test_windows, tol=config.tol)
    train, test = load_splits(task, task_config, ctx.data_root)
    ctx.log(f"adjoint decay on {task.name}: {len(train)} training windows, {len(test)} test windows")
    done = run_grid(ctx, [HybridCell(kind) for kind in config.models],
                    functools.partial(decay_record, task, task_config, train, test, ctx.out),
                    f"training on {task.name}", size=lambda cell: config.epochs, section="models",
                    describe=lambda cell, record: f"{LABELS[cell.kind]}: adjoint norm at the first / last "
                                                  f"observation {record['state'][0] / record['state'][-1]:.3g}")
    _report(config, ctx, done, task)


def _report(config, ctx, done, task) -> None:
    dataset = task.name
    rows = []
    for kind in config.models:
        r = done[kind]
        for j, remaining in enumerate(r["remaining"]):
            rows.append([LABELS[kind], j, f"{remaining:.4g}", f"{r['h'][j]:.4e}", f"{r['state'][j]:.4e}"])
        # how much of the adjoint survives from the last observation back to the first
        ctx.record(Key("adjoint_survival", kind, task.key), float(f"{r['state'][0] / r['state'][-1]:.4g}"))
    survival = {kind: {"survival": done[kind]["state"][0] / done[kind]["state"][-1]} for kind in config.models}
    ctx.judge(judge_orderings(EXPERIMENT.claims, survival, LABELS, {
        "survival": f"adjoint norm at the first observation / at the last, on {dataset} after {config.epochs} "
                    "epoch(s) (thesis: Walker2d, 500)"}))
    ctx.table("adjoint_norms", ["model", "observation", "T − t", "‖∂L/∂h_t‖", "‖∂L/∂(h_t, m_t)‖"], rows,
              caption=f"{dataset}: adjoint norms of the last prediction's loss at every observation (mean over test "
                      "windows) after training; for ODE-RNN both columns are ‖∂L/∂h_t‖.")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in config.models:
        r = done[kind]
        axes[0].semilogy(r["remaining"], r["state"], label=LABELS[kind])
        axes[1].semilogy(r["remaining"], r["h"], label=LABELS[kind])
    axes[0].set_ylabel("‖∂L/∂h_t‖ (ODE-RNN), ‖[∂L/∂h_t, ∂L/∂m_t]‖ (heavy ball)")
    axes[1].set_ylabel("‖∂L/∂h_t‖")
    for ax in axes:
        ax.set_xlabel("T − t")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Fig 3.5: adjoint norms back-propagated from the last time stamp ({dataset})")
    fig.tight_layout()
    ctx.figure("fig3_5_adjoint_decay", fig, caption="Fig 3.5: adjoint norm against T − t for trained hybrids.")


EXPERIMENT = Experiment(
    name="adjoint_decay",
    quick_seconds=40,
    title="Adjoint norms over long horizons in ODE-RNN hybrids",
    thesis_items="Fig 3.5",
    metrics={"adjoint_survival": Metric("adjoint norm at the first observation / at the last")},
    model_labels=LABELS,
    dataset_labels={"plane_vibration": "plane vibration", "walker2d": "Walker2d"},
    config_class=AdjointDecayConfig,
    summary="The thesis shows (figure only) the ODE-RNN adjoint vanishing quickly with T − t on Walker2d while the "
            "(G)HBNODE-RNN adjoints decay much more slowly.",
    profiles={
        "smoke": {"epochs": 1, "batch_size": 8, "train_windows": 8, "test_windows": 8, "tol": 1e-2},
        "quick": {"epochs": 3, "batch_size": 32, "train_windows": 64, "test_windows": 32, "tol": 1e-3},
        "full": {},
    },
    run=run,
    claims={"heavy_ball_keeps_adjoint": Ordering(
        "Fig 3.5", "The ODE-RNN adjoint vanishes quickly as T − t grows, while the HBNODE-RNN and GHBNODE-RNN "
                   "adjoints decay much more slowly (more of the adjoint reaches the first observation).",
        quantity="survival", low=("odernn",), high=("hbnode", "ghbnode"))},
    missing_data=_missing,
    download=lambda root, config: plane_data.download(root),
)
