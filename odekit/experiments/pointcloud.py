"""``pointcloud`` — Fig 3.6: separating nested 2-D point clouds with the five ODE models.

40 points in the disc r < 0.5 (label −1) and 80 in the annulus 0.85 < r < 1 (label +1); the
models of Table 3.2 (``odekit.models.pointcloud_model``) integrate over [0, 1] with dopri5 at
rtol = atol = 1e-7 and the adjoint, and are trained full batch with Adam (lr 0.01) on the MSE.
Per iteration we record the training loss and the forward and backward NFE, averaged over
independent runs (different seeds for data and weights), and we draw the learned evolution.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.synthetic import nested_spheres
from ..models import MODEL_KINDS, pointcloud_model
from ..models.dynamics import FAMILIES
from ..models.zoo import THESIS_PARAMS, count_parameters
from ..report import atomic
from ..report.plots import pyplot
from ..report.records import Key
from .base import Experiment, ExperimentConfig, RunContext
from .claims import FIRST_ORDER_AND_SONODE, ThesisNumber, heavy_ball_beats, judge_orderings
from .grid import run_grid
from .training import TRAINING_METRICS

LABELS = {kind: family.label for kind, family in FAMILIES.items()}


@dataclass
class PointCloudConfig(ExperimentConfig):
    models: tuple[str, ...] = MODEL_KINDS
    runs: int = 10
    iterations: int = 300
    lr: float = 0.01
    tol: float = 1e-7
    method: str = "dopri5"
    gradient: str = "adjoint"


def train_pointcloud(kind: str, config: PointCloudConfig, seed: int
                     ) -> tuple[dict[str, list[float]], torch.nn.Module]:
    """Train one model of Table 3.2; per iteration: loss, forward and backward NFE, seconds."""
    torch.manual_seed(seed)
    x, y = nested_spheres(seed=seed)
    model = pointcloud_model(kind, method=config.method, rtol=config.tol, atol=config.tol, gradient=config.gradient)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: dict[str, list[float]] = {"loss": [], "nfe_forward": [], "nfe_backward": [], "seconds": []}
    for _ in range(config.iterations):
        start = time.perf_counter()
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        forward = model.stats.nfe
        loss.backward()
        optimiser.step()
        history["loss"].append(loss.item())
        history["nfe_forward"].append(forward)
        history["nfe_backward"].append(model.stats.nfe_backward)
        history["seconds"].append(time.perf_counter() - start)
    return history, model


@dataclass(frozen=True)
class Cell:
    """One training run: a model of Table 3.2 on the point cloud of ``seed``, initialised with ``seed``."""

    kind: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.seed}"


def _weights_path(out: Path, kind: str) -> Path:
    return out / f"weights_{kind}.pt"


def cell_record(config: PointCloudConfig, out: Path, cell: Cell) -> dict[str, list[float]]:
    """Train ``cell``'s run; its per-iteration history (the grid's work). The first seed's weights are kept
    under ``out`` (the run folder) for the picture of the evolution."""
    history, model = train_pointcloud(cell.kind, config, cell.seed)
    if cell.seed == config.seed:
        atomic.write_state(_weights_path(out, cell.kind), model)
    return history


def run(config: PointCloudConfig, ctx: RunContext) -> None:
    unknown = [m for m in config.models if m not in MODEL_KINDS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_KINDS)}")
    cells = [Cell(kind, config.seed + r) for kind in config.models for r in range(config.runs)]
    done = run_grid(ctx, cells, functools.partial(cell_record, config, ctx.out), "point cloud training runs",
                    section="histories")

    rows = []
    summary = {}
    for kind in config.models:
        histories = [done[f"{kind}/{config.seed + r}"] for r in range(config.runs)]
        stack = {k: np.array([h[k] for h in histories]) for k in ("loss", "nfe_forward", "nfe_backward", "seconds")}
        summary[kind] = stack
        final_loss = stack["loss"][:, -1]
        rows.append([LABELS[kind], config.runs, f"{final_loss.mean():.4f}", f"{final_loss.std():.4f}",
                     f"{stack['nfe_forward'].mean():.1f}", f"{stack['nfe_backward'].mean():.1f}",
                     f"{stack['nfe_forward'].max():.0f}", f"{stack['nfe_backward'].max():.0f}",
                     f"{stack['seconds'].mean() * 1e3:.1f}"])
        ctx.record(Key("final_training_loss", kind), round(float(final_loss.mean()), 4))
        ctx.record(Key("nfe_forward", kind), round(float(stack["nfe_forward"].mean()), 1))
        ctx.record(Key("nfe_backward", kind), round(float(stack["nfe_backward"].mean()), 1))
        ctx.record(Key("parameters", kind), count_parameters(pointcloud_model(kind)))
    quantities = {kind: {"final_loss": float(stack["loss"][:, -1].mean()),
                         "nfe_forward": float(stack["nfe_forward"].mean()),
                         "nfe_backward": float(stack["nfe_backward"].mean())} for kind, stack in summary.items()}
    trained = f"{config.iterations} iterations (thesis 300), mean of {config.runs} runs"
    ctx.judge(judge_orderings(EXPERIMENT.claims, quantities, LABELS, {
        "final_loss": f"final training loss after {trained}", "nfe_forward": f"forward NFE per iteration, {trained}",
        "nfe_backward": f"backward NFE per iteration, {trained}"}))
    ctx.table("pointcloud", ["model", "runs", "final loss mean", "final loss std", "forward NFE mean",
                             "backward NFE mean", "forward NFE max", "backward NFE max", "ms per iteration"], rows,
              caption=f"Point-cloud separation, {config.iterations} Adam iterations, tolerance {config.tol:g}, "
                      f"{config.runs} runs per model; NFE per iteration averaged over iterations and runs.")
    _plot_curves(config, ctx, summary)
    _plot_evolution(config, ctx)


def _plot_curves(config, ctx, summary) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    iterations = np.arange(1, config.iterations + 1)
    for kind, stack in summary.items():
        for ax, key in zip(axes, ("nfe_forward", "nfe_backward", "loss")):
            low, median, high = np.percentile(stack[key], [25, 50, 75], axis=0)
            ax.plot(iterations, median, label=LABELS[kind])
            ax.fill_between(iterations, low, high, alpha=0.15)
    for ax, title in zip(axes, ("forward NFE", "backward NFE", "training loss (MSE)")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"Point cloud separation (median and interquartile range over {config.runs} runs; Fig. 3.6)")
    ctx.figure("pointcloud_curves", fig, caption="Forward NFE, backward NFE and training loss per iteration, "
                                                 f"median and interquartile range over {config.runs} runs (Fig. 3.6).")


def _plot_evolution(config, ctx) -> None:
    plt = pyplot()

    x, y = nested_spheres(seed=config.seed)
    colours = np.where(y[:, 0].numpy() > 0, "tab:orange", "tab:blue")
    fig, axes = plt.subplots(1, len(config.models), figsize=(4 * len(config.models), 4), squeeze=False)
    times = torch.linspace(0, 1, 30)
    for ax, kind in zip(axes[0], config.models):
        model = pointcloud_model(kind, rtol=1e-5, atol=1e-5)
        model.load_state_dict(torch.load(_weights_path(ctx.out, kind)))
        with torch.no_grad():
            path = model.block(model.initial(x), times)
        h = (path[0] if isinstance(path, tuple) else path).numpy()
        for i in range(len(x)):
            ax.plot(h[:, i, 0], h[:, i, 1], color=colours[i], alpha=0.35, linewidth=0.8)
        ax.scatter(h[-1, :, 0], h[-1, :, 1], c=colours, s=8)
        ax.set_title(f"{LABELS[kind]}: h(t), t ∈ [0, 1]")
        ax.set_aspect("equal", "datalim")
    ctx.figure("pointcloud_evolution", fig, caption="Learned evolution of the point cloud (first two state "
                                                    "coordinates) for the first run of each model; blue: inner "
                                                    "disc, orange: outer annulus.")


EXPERIMENT = Experiment(
    name="pointcloud",
    quick_seconds=65,
    title="Point-cloud separation with the five ODE models",
    thesis_items="Fig 3.6, Table 3.2",
    config_class=PointCloudConfig,
    summary="The thesis shows (figure only) that HBNODE and GHBNODE drive the loss to zero with fewer forward "
            "and backward NFE, while NODE cannot separate the classes and ANODE/SONODE often stall.",
    profiles={
        "smoke": {"runs": 1, "iterations": 3, "tol": 1e-3},
        # NFE grow with training (about 30 per pass at initialisation, about 180 after 300 iterations),
        # so the quick profile follows the first 40 iterations of 6 runs (about a minute).
        "quick": {"runs": 6, "iterations": 40},
        "full": {"runs": 100, "iterations": 300},
    },
    run=run,
    thesis={Key("parameters", kind): ThesisNumber(count, f"Table 3.2, {LABELS[kind]}", rel_tol=0.02)
            for kind, count in THESIS_PARAMS["pointcloud"].items()},
    metrics=TRAINING_METRICS,
    model_labels=LABELS,
    claims={
        "lower_loss": heavy_ball_beats("final_loss", ("node",), "Fig 3.6",
                                       "HBNODE and GHBNODE drive the training loss towards zero while NODE cannot "
                                       "separate the classes (lower final loss than NODE)."),
        "fewer_forward_nfe": heavy_ball_beats("nfe_forward", FIRST_ORDER_AND_SONODE, "Fig 3.6",
                                              "HBNODE and GHBNODE need fewer forward NFE than NODE, ANODE and SONODE."),
        "fewer_backward_nfe": heavy_ball_beats("nfe_backward", FIRST_ORDER_AND_SONODE, "Fig 3.6",
                                               "HBNODE and GHBNODE need fewer backward NFE than NODE, ANODE and "
                                               "SONODE."),
    },
)
