"""What the ODE-RNN hybrid experiments (plane vibration, Walker2d) share: task description,
config, model construction, the training loop, and the report.

Each model is a cell of the run's grid (:func:`~odekit.experiments.grid.run_grid`), trained by Adam
with gradient-norm clipping and — as the authors' scripts do — a fresh Adam at a second learning
rate from a given epoch. Per epoch it records the training loss, the test loss, forward and
backward NFE per batch and the wall time; the trained weights are written atomically under the run
folder for the figure's learned curves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.plane_vibration import WindowSet
from ..models.dynamics import FAMILIES
from ..models.sequence import ODERNN, SEQUENCE_KINDS, HybridSizes
from ..models.zoo import count_parameters
from ..report import atomic
from ..report.plots import pyplot
from ..report.records import Key
from .base import ExperimentConfig, RunContext
from .claims import Claim, ThesisNumber, judge_orderings
from .grid import cell_advance, cell_log, run_grid, unfinished_path
from .training import EpochResume, train_epoch

# the ODE-RNN hybrids by the family of their flow ("odernn" is NODE's)
LABELS = {kind: f"{'ODE' if kind == 'odernn' else FAMILIES[kind].label}-RNN" for kind in SEQUENCE_KINDS}


@dataclass(frozen=True)
class HybridTask:
    """One time-series task: its data, the model sizes of its thesis table, how the models start."""

    key: str  # identifier in records ("walker2d")
    name: str  # for people ("Walker2d")
    figure: str
    thesis_figure: str
    thesis_table: str  # the table of the thesis's model sizes and parameter counts
    features: tuple[str, ...]
    sizes: dict[str, HybridSizes]
    thesis_parameters: dict[str, int]
    heavy_ball: dict[str, dict]  # keyword arguments of the (G)HBNODE dynamics, per kind
    initial_window: int | None  # initial state from the flattened window (plane) or zeros (Walker2d)
    forecast: int
    next_step_weight: float
    load: Callable[[Path], dict[str, WindowSet]]
    claims: dict[str, Claim]  # the thesis's claims about the figure, judged per run (mostly Orderings)
    thesis_epochs: int  # the length of the thesis's training, quoted beside each verdict

    def thesis_numbers(self) -> dict[Key, ThesisNumber]:
        """The parameter counts of the thesis's table (ours must lie within 2 %)."""
        return {Key("parameters", kind): ThesisNumber(count, f"{self.thesis_table}, {LABELS[kind]}", rel_tol=0.02)
                for kind, count in self.thesis_parameters.items()}


@dataclass
class HybridConfig(ExperimentConfig):
    models: tuple[str, ...] = ("odernn", "anode", "sonode", "hbnode", "ghbnode")
    epochs: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    lr_after: float = 1e-4
    switch_epoch: int = 50
    clip: float = 1.0
    tol: float = 1e-7
    method: str = "dopri5"
    gradient: str = "adjoint"
    per_sample: bool = False  # each window's flows with their own steps (odekit's per_sample=True)
    init_scale: float = 1.0
    train_windows: int = 0  # 0: all
    test_windows: int = 0  # 0: all
    sample_feature: int = 0  # feature drawn in the learned-curve panel


@dataclass
class TrainingPlan:
    epochs: int
    batch_size: int
    lr: float
    lr_after: float  # the learning rate of the fresh Adam from ``switch_epoch`` on
    switch_epoch: int
    clip: float
    next_step_weight: float  # weight of the next-step MSE; the forecast MSE has weight 1
    forecast: int
    seed: int


def hybrid_loss(model: ODERNN, data: WindowSet, plan: TrainingPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """``w·MSE(next step) + MSE(forecast)`` (forecast term only when the data has forecast targets)."""
    if plan.forecast:
        predictions, forecast = model(data.x, data.dt, plan.forecast)
        forecast_mse = torch.nn.functional.mse_loss(forecast, data.forecast[:, : plan.forecast])
    else:
        predictions, forecast_mse = model(data.x, data.dt), torch.zeros(())
    return plan.next_step_weight * torch.nn.functional.mse_loss(predictions, data.y) + forecast_mse, forecast_mse


def evaluate(model: ODERNN, data: WindowSet, plan: TrainingPlan) -> dict[str, float]:
    losses, forecasts, nfe = [], [], []
    with torch.no_grad():
        for start in range(0, len(data), plan.batch_size):
            batch = data.subset(slice(start, start + plan.batch_size))
            loss, forecast = hybrid_loss(model, batch, plan)
            losses.append(loss.item() * len(batch))
            forecasts.append(forecast.item() * len(batch))
            nfe.append(model.stats.nfe)
    return {"loss": sum(losses) / len(data), "forecast_mse": sum(forecasts) / len(data), "nfe": float(np.mean(nfe))}


def train_hybrid(model: ODERNN, label: str, train: WindowSet, test: WindowSet, plan: TrainingPlan,
                 weights: Path | None = None, resume: Path | None = None) -> list[dict]:
    """Train ``model``; returns one record per epoch, each reported to the grid (:func:`cell_advance`,
    :func:`cell_log`). With ``resume``, the state after each epoch is kept there and a stopped
    training continues from it."""
    torch.manual_seed(plan.seed)
    shuffle = torch.Generator().manual_seed(plan.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=plan.lr)
    partial = EpochResume(resume)
    epochs = partial.restore(model, optimiser, shuffle)
    cell_advance(len(epochs))
    for epoch in range(len(epochs) + 1, plan.epochs + 1):
        if epoch == plan.switch_epoch:
            optimiser = torch.optim.Adam(model.parameters(), lr=plan.lr_after)
        order = torch.randperm(len(train), generator=shuffle)
        batches = (train.subset(order[first: first + plan.batch_size])
                   for first in range(0, len(order), plan.batch_size))
        done = train_epoch(model, optimiser, batches, lambda batch: hybrid_loss(model, batch, plan)[0], plan.clip)
        scores = evaluate(model, test, plan)
        record = {"epoch": epoch, "train_loss": done.loss, "test_loss": scores["loss"],
                  "test_forecast_mse": scores["forecast_mse"], "nfe_forward": done.nfe_forward,
                  "nfe_backward": done.nfe_backward, "test_nfe": scores["nfe"], "train_seconds": done.seconds}
        epochs.append(record)
        partial.save(model, optimiser, shuffle, epochs)
        cell_log(f"{label} epoch {epoch}: train {record['train_loss']:.4f}, test {record['test_loss']:.4f}, "
                 f"NFE {record['nfe_forward']:.0f}/{record['nfe_backward']:.0f} per batch, {done.seconds:.0f} s")
        cell_advance()
    if weights is not None:
        atomic.write_state(weights, model)
    return epochs


def build_model(task: HybridTask, kind: str, config: HybridConfig) -> ODERNN:
    """The ``kind`` hybrid of ``task``, initialised from ``config.seed`` (whatever ran before)."""
    torch.manual_seed(config.seed)
    model = ODERNN(kind, len(task.features), task.sizes[kind], window=task.initial_window,
                   heavy_ball=task.heavy_ball.get(kind), method=config.method, rtol=config.tol, atol=config.tol,
                   gradient=config.gradient, per_sample=config.per_sample)
    if config.init_scale != 1.0:
        shrink_parameters(model, config.init_scale)
    return model


def plan_of(task: HybridTask, config: HybridConfig) -> TrainingPlan:
    return TrainingPlan(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, lr_after=config.lr_after,
                        switch_epoch=config.switch_epoch, clip=config.clip, next_step_weight=task.next_step_weight,
                        forecast=task.forecast, seed=config.seed)


def load_splits(task: HybridTask, config: HybridConfig, root: Path) -> tuple[WindowSet, WindowSet]:
    splits = task.load(root)
    train = splits["train"].subset(slice(0, config.train_windows or None))
    test = splits["test"].subset(slice(0, config.test_windows or None))
    if not len(train) or not len(test):
        raise ValueError(f"{task.name}: no complete windows in the training or test split; more data is needed")
    return train, test


@dataclass(frozen=True)
class HybridCell:
    """One hybrid of a run's grid: the kind of its flow (``"hbnode"``)."""

    kind: str

    @property
    def key(self) -> str:
        return self.kind


def hybrid_record(task: HybridTask, config: HybridConfig, train: WindowSet, test: WindowSet, out: Path,
                  cell: HybridCell) -> dict:
    """Train one hybrid of ``task`` (the grid's work function): its per-epoch records; its weights, and
    the state of an unfinished training, are kept under the run folder ``out``."""
    model = build_model(task, cell.kind, config)
    epochs = train_hybrid(model, LABELS[cell.kind], train, test, plan_of(task, config),
                          out / f"weights_{cell.kind}.pt", unfinished_path(out, cell))
    return {"epochs": epochs}


def describe_hybrid(cell: HybridCell, record: dict) -> str:
    """The log line of a trained hybrid (a Ray worker's per-epoch lines stay there)."""
    last = record["epochs"][-1] if record["epochs"] else None
    return f"{LABELS[cell.kind]}: " + (f"{last['epoch']} epochs, test loss {last['test_loss']:.5f}" if last
                                       else "no epochs")


def run_hybrid_experiment(task: HybridTask, config: HybridConfig, ctx: RunContext) -> None:
    """Train every model of ``config.models`` on ``task``, then write its table, records and figure."""
    unknown = [m for m in config.models if m not in task.sizes]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(task.sizes)}")
    train, test = load_splits(task, config, ctx.data_root)
    ctx.log(f"{task.name}: {len(train)} training and {len(test)} test windows of {train.x.shape[1]} irregular samples")
    trained = run_grid(ctx, [HybridCell(kind) for kind in config.models],
                       functools.partial(hybrid_record, task, config, train, test, ctx.out), f"{task.name} epochs",
                       size=lambda cell: config.epochs, describe=describe_hybrid,
                       section="hybrids")  # not "models": that held bare lists before cells had records
    done = {kind: record["epochs"] for kind, record in trained.items()}
    _report(task, config, ctx, done)
    _plot(task, config, ctx, done, test)


def _report(task: HybridTask, config: HybridConfig, ctx: RunContext, done: dict) -> None:
    rows = []
    # what each model ended with: last-epoch losses, NFE per batch averaged over the epochs
    summary = {kind: {"test_loss": done[kind][-1]["test_loss"], "train_loss": done[kind][-1]["train_loss"],
                      "nfe_forward": float(np.mean([e["nfe_forward"] for e in done[kind]])),
                      "nfe_backward": float(np.mean([e["nfe_backward"] for e in done[kind]]))}
               for kind in config.models}
    for kind in config.models:
        params = count_parameters(build_model(task, kind, config))
        for e in done[kind]:
            rows.append([LABELS[kind], params, e["epoch"], f"{e['train_loss']:.5f}", f"{e['test_loss']:.5f}",
                         f"{e['test_forecast_mse']:.5f}", f"{e['nfe_forward']:.1f}", f"{e['nfe_backward']:.1f}",
                         f"{e['train_seconds']:.1f}"])
        last = done[kind][-1]
        ctx.record(Key("test_loss", kind, x=last["epoch"]), round(last["test_loss"], 5))
        ctx.record(Key("nfe_forward", kind), round(summary[kind]["nfe_forward"], 1))
        ctx.record(Key("nfe_backward", kind), round(summary[kind]["nfe_backward"], 1))
        ctx.record(Key("parameters", kind), params)
    _judge(task, config, ctx, summary)
    loss = (f"{task.next_step_weight:g}·next-step MSE + {task.forecast}-step forecast MSE" if task.forecast
            else "next-step MSE")
    ctx.table(f"{task.figure}_epochs", ["model", "parameters", "epoch", "train loss", "test loss", "test forecast MSE",
                                        "forward NFE", "backward NFE", "train s"], rows,
              caption=f"{task.name}, per epoch: losses ({loss}) and NFE per batch; tolerance {config.tol:g}, "
                      f"{config.gradient} gradients.")


def _judge(task: HybridTask, config: HybridConfig, ctx: RunContext, summary: dict) -> None:
    """The task's claims on what the run measured: last-epoch losses and mean NFE per batch."""
    trained = f"after {config.epochs} epoch(s), thesis {task.thesis_epochs}"
    names = {"test_loss": f"test loss {trained}", "train_loss": f"training loss {trained}",
             "nfe_forward": f"forward NFE per batch ({trained})",
             "nfe_backward": f"backward NFE per batch ({trained})"}
    ctx.judge(judge_orderings(task.claims, summary, LABELS, names))


def _plot(task: HybridTask, config: HybridConfig, ctx: RunContext, done: dict, test: WindowSet) -> None:
    plt = pyplot()
    # The test window across the top, the four training curves below: ~1,560 px wide at the
    # report's 120 dpi, readable without zooming (one row of five was 2,867 px of small text).
    fig = plt.figure(figsize=(13, 8))
    grid = fig.add_gridspec(2, 4, height_ratios=(1.2, 1.0))
    axes = [fig.add_subplot(grid[0, :])] + [fig.add_subplot(grid[1, i]) for i in range(4)]
    window = test.subset(slice(0, 1))
    feature = config.sample_feature
    length = window.x.shape[1]
    steps = np.arange(1, length + 1)
    axes[0].plot(steps, window.y[0, :, feature], color="black", linewidth=2, label="ground truth")
    if task.forecast:
        axes[0].plot(np.arange(length + 1, length + 1 + task.forecast), window.forecast[0, :, feature],
                     color="black", linewidth=2, linestyle=":")
    for kind in config.models:
        weights = ctx.out / f"weights_{kind}.pt"
        if weights.is_file():
            model = build_model(task, kind, config)
            model.load_state_dict(torch.load(weights))
            with torch.no_grad():
                out = model(window.x, window.dt, task.forecast)
            predictions, forecast = out if task.forecast else (out, None)
            line = axes[0].plot(steps, predictions[0, :, feature], label=LABELS[kind], alpha=0.8)[0]
            if forecast is not None:
                axes[0].plot(np.arange(length + 1, length + 1 + task.forecast), forecast[0, :, feature],
                             linestyle="--", color=line.get_color())
        epochs = [e["epoch"] for e in done[kind]]
        style = {"marker": "o", "markersize": 3}
        axes[1].plot(epochs, [e["train_loss"] for e in done[kind]], label=LABELS[kind], **style)
        axes[2].plot(epochs, [e["test_loss"] for e in done[kind]], **style)
        axes[3].plot(epochs, [e["nfe_forward"] for e in done[kind]], **style)
        axes[4].plot(epochs, [e["nfe_backward"] for e in done[kind]], **style)
    axes[0].axvline(length + 0.5, color="grey", linewidth=0.8)
    axes[0].set_title(f"test window, {task.features[feature]}" + (" (dashed: forecast)" if task.forecast else ""))
    axes[0].set_xlabel("observation")
    axes[0].legend(fontsize=9)
    for ax, title in zip(axes[1:], ("training loss", "test loss", "forward NFE per batch", "backward NFE per batch")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        if "loss" in title:
            ax.set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{task.name}: ODE-RNN hybrids ({task.thesis_figure})")
    fig.tight_layout()
    ctx.figure(task.figure, fig, caption=f"{task.thesis_figure}: learned curves on a test window, losses and NFE per "
                                         "epoch of the hybrids.")


def shrink_parameters(model: torch.nn.Module, factor: float) -> None:
    """Multiply every parameter and buffer by ``factor`` (the authors' plane-vibration initialisation).

    Without it the linear jumps of an untrained hybrid amplify the state over 64 observations
    (to ~1e8 at the default initialisation) and the first adjoint solves underflow.
    """
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(factor)
