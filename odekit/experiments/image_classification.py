"""``image_classification`` — Fig 3.7 / 3.1: NFE, time and accuracy of the five models on images.

The models of Table 3.3 (``odekit.models.image_model``) are trained with Adam on MNIST (or
CIFAR10) with dopri5 and the adjoint. Per epoch we record the forward and backward NFE per
batch, the training time and the test accuracy. The full profile uses the thesis setting
(MNIST, 40 epochs, batch 64, tolerance 1e-5 as in Fig. 3.7's caption, Adam 5e-5 and gradient
clipping 10 as in the authors' code); the quick profile trains on a subset with a larger learning
rate so that a 2-core CPU sees the curves start in a few minutes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import images
from ..models import MODEL_KINDS, image_model
from ..models.zoo import THESIS_PARAMS, count_parameters
from ..report import atomic
from ..report.plots import pyplot
from ..report.records import Key
from .base import Experiment, ExperimentConfig, RunContext
from .claims import FIRST_ORDER_AND_SONODE, ThesisNumber, heavy_ball_beats, judge_orderings
from .grid import cell_advance, cell_log, run_grid, unfinished_path
from .pointcloud import LABELS
from .training import TRAINING_METRICS, EpochResume, train_epoch

LOADERS = {"mnist": images.load_mnist, "cifar10": images.load_cifar10}


@dataclass
class ImageConfig(ExperimentConfig):
    dataset: str = "mnist"
    models: tuple[str, ...] = MODEL_KINDS
    epochs: int = 40
    batch_size: int = 64
    lr: float = 5e-5
    tol: float = 1e-5
    clip: float = 10.0
    train_subset: int = 0  # 0 = the whole training set
    test_subset: int = 0
    method: str = "dopri5"


def _subset(data, n: int, seed: int):
    x, y = data.tensors
    if n and n < len(x):
        index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[index], y[index]
    return x, y


def load_data(config: ImageConfig, root: Path):
    """``((x_train, y_train), (x_test, y_test))`` from the data root, subsets drawn with the config's seed."""
    return _images(root, config.dataset, config.train_subset, config.test_subset, config.seed)


@functools.lru_cache(maxsize=1)
def _images(root: Path, dataset: str, train_subset: int, test_subset: int, seed: int):
    """One copy per process: a run's cells (or a Ray worker's) read the images once."""
    load = LOADERS[dataset]
    return (_subset(load(root, train=True), train_subset, seed),
            _subset(load(root, train=False), test_subset, seed + 1))


def _evaluate(model, x, y, batch_size: int) -> tuple[float, float]:
    correct, nfe = 0, []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start: start + batch_size])
            correct += int((logits.argmax(1) == y[start: start + batch_size]).sum())
            nfe.append(model.stats.nfe)
    return correct / len(x), float(np.mean(nfe))


def train_model(kind: str, config: ImageConfig, data, weights: Path | None = None,
                resume: Path | None = None) -> list[dict]:
    """Train one model of Table 3.3 as ``config`` says; per epoch: NFE per batch, time, loss, test accuracy.

    Each epoch, restored ones included, is a unit of progress of the grid cell it runs in
    (:func:`~odekit.experiments.grid.cell_advance`). The trained weights are written to ``weights``
    when given; with ``resume``, the state after each epoch is kept there and a stopped training
    continues from it.
    """
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(config.seed)
    model = image_model(kind, config.dataset, method=config.method, rtol=config.tol, atol=config.tol)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    shuffle = torch.Generator().manual_seed(config.seed)
    partial = EpochResume(resume)
    epochs = partial.restore(model, optimiser, shuffle)
    cell_advance(len(epochs))
    for epoch in range(len(epochs) + 1, config.epochs + 1):
        order = torch.randperm(len(x_train), generator=shuffle)
        batches = (order[first: first + config.batch_size] for first in range(0, len(order), config.batch_size))
        done = train_epoch(model, optimiser, batches,
                           lambda batch: torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]),
                           config.clip)
        accuracy, test_nfe = _evaluate(model, x_test, y_test, config.batch_size)
        epochs.append({"epoch": epoch, "nfe_forward": done.nfe_forward, "nfe_backward": done.nfe_backward,
                       "train_seconds": done.seconds, "train_loss": done.loss, "test_accuracy": accuracy,
                       "test_nfe": test_nfe})
        cell_log(f"{LABELS[kind]} epoch {epoch}: loss {done.loss:.3f}, test accuracy {accuracy:.3f}, "
                 f"NFE {done.nfe_forward:.1f}/{done.nfe_backward:.1f}, {done.seconds:.0f} s")
        partial.save(model, optimiser, shuffle, epochs)
        cell_advance()
    if weights is not None:
        atomic.write_state(weights, model)
    return epochs


@dataclass(frozen=True)
class Cell:
    """One model of Table 3.3 trained for the config's epochs."""

    kind: str

    @property
    def key(self) -> str:
        return self.kind


def cell_record(config: ImageConfig, data_root: Path, out: Path, cell: Cell) -> dict[str, list[dict]]:
    """Train ``cell``'s model, its weights and per-epoch resume state under ``out`` (the run folder); its
    epochs (the grid's work)."""
    return {"epochs": train_model(cell.kind, config, load_data(config, data_root), out / f"weights_{cell.kind}.pt",
                                  unfinished_path(out, cell))}


def _describe(cell: Cell, record: dict) -> str:
    """The log line of a trained model (a Ray worker's per-epoch lines stay there)."""
    last = record["epochs"][-1] if record["epochs"] else None
    return f"{LABELS[cell.kind]}: " + (f"{last['epoch']} epochs, test accuracy {last['test_accuracy']:.3f}" if last
                                       else "no epochs")


def _summary(done: dict, kinds) -> dict[str, dict[str, float]]:
    """Per model: NFE per batch averaged over the epochs, total training seconds, last test error."""
    return {kind: {"nfe_forward": float(np.mean([e["nfe_forward"] for e in done[kind]])),
                   "nfe_backward": float(np.mean([e["nfe_backward"] for e in done[kind]])),
                   "train_seconds": float(sum(e["train_seconds"] for e in done[kind])),
                   "test_error": 1.0 - done[kind][-1]["test_accuracy"]} for kind in kinds}


def _judge(config: ImageConfig, ctx: RunContext, summary: dict) -> None:
    trained = f"{config.dataset}, {config.epochs} epoch(s) (thesis 40)"
    ctx.judge(judge_orderings(EXPERIMENT.claims, summary, LABELS, {
        "nfe_forward": f"forward NFE per batch, {trained}", "nfe_backward": f"backward NFE per batch, {trained}",
        "train_seconds": f"training seconds, {trained}", "test_error": f"test error (1 − accuracy), {trained}"}))


def run(config: ImageConfig, ctx: RunContext) -> None:
    if config.dataset not in LOADERS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(LOADERS)}")
    unknown = [m for m in config.models if m not in MODEL_KINDS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_KINDS)}")
    data = load_data(config, ctx.data_root)
    trained = run_grid(ctx, [Cell(kind) for kind in config.models],
                       functools.partial(cell_record, config, ctx.data_root, ctx.out),
                       f"{config.dataset} training epochs", size=lambda cell: config.epochs, section="trained",
                       describe=_describe)
    done = {kind: record["epochs"] for kind, record in trained.items()}

    rows = []
    summary = _summary(done, config.models)
    for kind in config.models:
        for e in done[kind]:
            rows.append([LABELS[kind], e["epoch"], f"{e['nfe_forward']:.1f}", f"{e['nfe_backward']:.1f}",
                         f"{e['train_seconds']:.1f}", f"{e['train_loss']:.4f}", f"{e['test_accuracy']:.4f}"])
        last = done[kind][-1]
        ctx.record(Key("test_accuracy", kind, config.dataset, last["epoch"]), round(last["test_accuracy"], 4))
        ctx.record(Key("nfe_forward", kind, config.dataset), round(summary[kind]["nfe_forward"], 1))
        ctx.record(Key("nfe_backward", kind, config.dataset), round(summary[kind]["nfe_backward"], 1))
        ctx.record(Key("parameters", kind, config.dataset), count_parameters(image_model(kind, config.dataset)))
    _judge(config, ctx, summary)
    ctx.table(f"{config.dataset}_epochs", ["model", "epoch", "forward NFE", "backward NFE", "train s", "train loss",
                                           "test accuracy"], rows,
              caption=f"{config.dataset}: per-epoch NFE per batch, training time, loss and test accuracy "
                      f"(tolerance {config.tol:g}, {len(data[0][0])} training and {len(data[1][0])} test images).")
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for kind in config.models:
        epochs = [e["epoch"] for e in done[kind]]
        cumulative = np.cumsum([e["train_seconds"] for e in done[kind]])
        axes[0].plot(epochs, [e["nfe_forward"] for e in done[kind]], marker="o", label=LABELS[kind])
        axes[1].plot(epochs, [e["nfe_backward"] for e in done[kind]], marker="o")
        axes[2].plot(epochs, cumulative, marker="o")
        axes[3].plot(epochs, [e["test_accuracy"] for e in done[kind]], marker="o")
    for ax, title in zip(axes, ("forward NFE per batch", "backward NFE per batch", "training time (s)",
                                "test accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{config.dataset}: the five ODE models (tolerance {config.tol:g}; Fig. 3.7 / 3.1)")
    ctx.figure(f"{config.dataset}_curves", fig, caption=f"{config.dataset}: forward and backward NFE, cumulative "
                                                        "training time and test accuracy per epoch (Fig. 3.7 / 3.1).")


EXPERIMENT = Experiment(
    name="image_classification",
    quick_seconds=185,
    threads=2,  # sparse graph / conv products: 2 threads beat 1 on a quiet 2-core machine (measured)
    title="Image classification: NFE, time and accuracy of the five ODE models",
    thesis_items="Fig 3.7 (MNIST), Fig 3.1 (CIFAR10), Table 3.3",
    config_class=ImageConfig,
    summary="The thesis shows (figures only) HBNODE and GHBNODE needing far fewer forward and especially "
            "backward NFE than NODE, ANODE and SONODE, training faster, and reaching slightly higher accuracy.",
    profiles={
        "smoke": {"epochs": 1, "batch_size": 16, "train_subset": 32, "test_subset": 32, "lr": 1e-3, "tol": 1e-2},
        "quick": {"epochs": 2, "batch_size": 32, "train_subset": 256, "test_subset": 256, "lr": 1e-3, "tol": 1e-3},
        "full": {},
    },
    run=run,
    thesis={Key("parameters", kind, dataset): ThesisNumber(count, f"Table 3.3, {dataset}, {LABELS[kind]}",
                                                           rel_tol=0.02)
            for dataset in LOADERS for kind, count in THESIS_PARAMS[dataset].items()},
    metrics=TRAINING_METRICS,
    model_labels=LABELS,
    dataset_labels={"mnist": "MNIST", "cifar10": "CIFAR10"},
    claims={
        "fewer_forward_nfe": heavy_ball_beats("nfe_forward", FIRST_ORDER_AND_SONODE, "Fig 3.7 / 3.1",
                                              "HBNODE and GHBNODE need far fewer forward NFE than NODE, ANODE and "
                                              "SONODE."),
        "fewer_backward_nfe": heavy_ball_beats("nfe_backward", FIRST_ORDER_AND_SONODE, "Fig 3.7 / 3.1",
                                               "HBNODE and GHBNODE need far fewer backward NFE than NODE, ANODE and "
                                               "SONODE."),
        "faster_training": heavy_ball_beats("train_seconds", FIRST_ORDER_AND_SONODE, "Fig 3.7 / 3.1",
                                            "HBNODE and GHBNODE train faster (less wall time)."),
        "higher_accuracy": heavy_ball_beats("test_error", FIRST_ORDER_AND_SONODE, "Fig 3.7 / 3.1",
                                            "HBNODE and GHBNODE reach slightly higher test accuracy."),
    },
    missing_data=lambda root, config: images.IMAGE_DATA[config.dataset].missing(root)
    if config.dataset in images.IMAGE_DATA else [],
    download=lambda root, config: images.IMAGE_DATA[config.dataset].download(root),
)
