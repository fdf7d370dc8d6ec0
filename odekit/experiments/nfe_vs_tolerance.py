"""``nfe_vs_tolerance`` — Fig 3.8: forward and backward NFE against the solver tolerance.

For each tolerance, each of the five models of Table 3.3 is trained from the same
initialisation (as in ``image_classification``) and we record the mean forward and backward
NFE per batch. The thesis sweeps tolerances 1e0 … 1e-5 on CIFAR10 (the authors' NFE plots).
The quick profile cannot afford that on a CPU: trained for one batch at each tolerance, the models
stay at chance accuracy and every model's NFE depend on the tolerance alone. It uses the ``probe``
protocol instead: each model is trained once on an MNIST subset, then one forward and backward
pass of a test batch is counted at each tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import images
from ..models import MODEL_KINDS, image_model
from ..report.plots import pyplot
from ..report.records import Key, Metric
from .base import Experiment, RunContext
from .claims import FIRST_ORDER_AND_SONODE, heavy_ball_beats, judge_orderings
from .grid import run_grid, unfinished_path
from .image_classification import LOADERS, ImageConfig, load_data, train_model
from .pointcloud import LABELS


@dataclass
class NFEToleranceConfig(ImageConfig):
    tolerances: tuple[float, ...] = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    dataset: str = "cifar10"
    epochs: int = 1
    lr: float = 1e-3
    # "train": train every model at each tolerance and average its NFE over training (the thesis's
    # protocol). "probe": train every model once at ``tol``, then measure the NFE of one forward and
    # backward pass of a test batch at each tolerance: far cheaper, and the fields are trained (at
    # initialisation every model's NFE depends on the tolerance alone).
    protocol: str = "train"


PROTOCOLS = ("train", "probe")
# Below this test accuracy (chance is 0.10) the fields are still near their initialisation.
TRAINED_ACCURACY = 0.5


@dataclass(frozen=True)
class Cell:
    """One model trained at ``tol`` (the ``train`` protocol), or, with no ``tol``, trained once at the
    config's tolerance and probed at each tolerance (the ``probe`` protocol)."""

    kind: str
    tol: float | None = None

    @property
    def key(self) -> str:
        return self.kind if self.tol is None else f"{self.kind}|{self.tol:g}"


def trained_record(config: NFEToleranceConfig, data_root: Path, cell: Cell) -> dict[str, float]:
    """The ``train`` protocol's work: NFE per batch averaged over training at ``cell.tol``, and the last
    test accuracy."""
    epochs = train_model(cell.kind, dataclasses.replace(config, tol=cell.tol), load_data(config, data_root))
    return {"nfe_forward": float(np.mean([e["nfe_forward"] for e in epochs])),
            "nfe_backward": float(np.mean([e["nfe_backward"] for e in epochs])),
            "test_accuracy": epochs[-1]["test_accuracy"]}


def probed_record(config: NFEToleranceConfig, data_root: Path, out: Path, cell: Cell) -> dict[str, dict[str, float]]:
    """The ``probe`` protocol's work: train ``cell``'s model at the config's tolerance (its weights and
    per-epoch resume state under ``out``, the run folder), then count the NFE of one forward and backward
    pass of a test batch at each tolerance; by tolerance (``f"{tol:g}"``)."""
    data = load_data(config, data_root)
    (_, _), (x_test, y_test) = data
    x, y = x_test[: config.batch_size], y_test[: config.batch_size]
    weights = out / f"weights_{cell.kind}.pt"
    epochs = train_model(cell.kind, config, data, weights, unfinished_path(out, cell))
    probes = {}
    for tol in config.tolerances:
        model = image_model(cell.kind, config.dataset, method=config.method, rtol=tol, atol=tol)
        model.load_state_dict(torch.load(weights))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        forward = model.stats.nfe
        loss.backward()
        probes[f"{tol:g}"] = {"nfe_forward": float(forward), "nfe_backward": float(model.stats.nfe_backward),
                              "test_accuracy": epochs[-1]["test_accuracy"]}
    return probes


def _measure(config: NFEToleranceConfig, ctx: RunContext) -> dict[str, dict[str, float]]:
    """Every model's NFE at every tolerance by the config's protocol, keyed ``f"{kind}|{tol:g}"``."""
    def epochs(cell: Cell) -> int:
        return config.epochs

    if config.protocol == "train":
        cells = [Cell(kind, tol) for tol in config.tolerances for kind in config.models]
        return run_grid(ctx, cells, functools.partial(trained_record, config, ctx.data_root),
                        "training at each tolerance", size=epochs)
    probed = run_grid(ctx, [Cell(kind) for kind in config.models],
                      functools.partial(probed_record, config, ctx.data_root, ctx.out),
                      f"training once at tolerance {config.tol:g}", size=epochs, section="probes")
    return {f"{kind}|{tol}": record for kind, probes in probed.items() for tol, record in probes.items()}


def run(config: NFEToleranceConfig, ctx: RunContext) -> None:
    if config.dataset not in LOADERS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(LOADERS)}")
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    load_data(config, ctx.data_root)  # a missing or broken file fails here, before any cell starts
    done = _measure(config, ctx)
    rows = [[LABELS[k], f"{t:g}", f"{done[f'{k}|{t:g}']['nfe_forward']:.1f}",
             f"{done[f'{k}|{t:g}']['nfe_backward']:.1f}", f"{done[f'{k}|{t:g}']['test_accuracy']:.4f}"]
            for k in config.models for t in config.tolerances]
    measured = (f"mean NFE per batch while training for {config.epochs} epoch(s) at each tolerance"
                if config.protocol == "train" else
                f"NFE of one forward and backward pass of {config.batch_size} test images at each tolerance, after "
                f"training {config.epochs} epoch(s) at {config.tol:g}")
    ctx.table("nfe_vs_tolerance", ["model", "tolerance", "forward NFE", "backward NFE", "test accuracy"], rows,
              caption=f"{config.dataset}: {measured} (rtol = atol).")
    for kind in config.models:
        for tol in config.tolerances:
            for quantity in ("nfe_forward", "nfe_backward"):
                ctx.record(Key(quantity, kind, config.dataset, tol), round(done[f"{kind}|{tol:g}"][quantity], 1))
    _judge(config, ctx, done)
    _plot(config, ctx, done, measured)


def _judge(config: NFEToleranceConfig, ctx: RunContext, done: dict) -> None:
    """Fig 3.8's claim on the growth of NFE from the loosest to the tightest tolerance."""
    loose, tight = max(config.tolerances), min(config.tolerances)
    growth = {kind: {f"growth_{d}": done[f"{kind}|{tight:g}"][f"nfe_{d}"] / done[f"{kind}|{loose:g}"][f"nfe_{d}"]
                     for d in ("forward", "backward")} for kind in config.models}
    best = max(done[f"{kind}|{tol:g}"]["test_accuracy"] for kind in config.models for tol in config.tolerances)
    caveat = None
    if loose == tight:
        caveat = "one tolerance only: no growth to compare"
    elif best < TRAINED_ACCURACY:
        caveat = (f"the models stayed near initialisation (best test accuracy {best:.2f}; chance 0.10), where the "
                  "NFE depend on the tolerance alone")
    names = {f"growth_{d}": f"{d} NFE at tolerance {tight:g} / at {loose:g}" for d in ("forward", "backward")}
    ctx.judge(judge_orderings(EXPERIMENT.claims, growth, LABELS, names, caveat))


def _plot(config: NFEToleranceConfig, ctx: RunContext, done: dict, measured: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    markers = dict(zip(MODEL_KINDS, "osD^v"))
    tolerances = sorted(config.tolerances, reverse=True)
    for kind in config.models:
        cells = [done[f"{kind}|{t:g}"] for t in tolerances]
        for ax, direction in zip(axes[:2], ("forward", "backward")):
            ax.plot(tolerances, [c[f"nfe_{direction}"] for c in cells], marker=markers[kind], label=LABELS[kind])
        points = np.array([[c["nfe_forward"], c["nfe_backward"], t] for c, t in zip(cells, tolerances)])
        axes[2].plot(points[:, 0], points[:, 1], color="grey", linewidth=0.8, alpha=0.6)
        scatter = axes[2].scatter(points[:, 0], points[:, 1], c=np.log10(points[:, 2]), cmap="viridis",
                                  marker=markers[kind], s=60, label=LABELS[kind], edgecolors="k")
    for ax, direction in zip(axes[:2], ("forward", "backward")):
        ax.set_xscale("log")
        ax.invert_xaxis()  # tighter to the right, as the NFE grow
        ax.set_xlabel("tolerance (rtol = atol)")
        ax.set_ylabel(f"{direction} NFE per batch")
        ax.set_title(f"{direction} NFE against tolerance")
    fig.colorbar(scatter, ax=axes[2], label="log10 tolerance")
    axes[2].set_xlabel("forward NFE per batch")
    axes[2].set_ylabel("backward NFE per batch")
    axes[2].set_title("Fig. 3.8's view: forward vs backward")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"NFE vs tolerance ({config.dataset}, protocol '{config.protocol}')")
    fig.tight_layout()
    ctx.figure("nfe_vs_tolerance", fig, caption=f"Fig. 3.8: {measured}; left and centre per model against the "
                                                "tolerance, right forward against backward coloured by tolerance.")


EXPERIMENT = Experiment(
    name="nfe_vs_tolerance",
    quick_seconds=140,
    threads=2,  # convolutions: 2 threads beat 1 on a quiet 2-core machine (as image_classification)
    title="Forward and backward NFE against the solver tolerance",
    thesis_items="Fig 3.8",
    metrics={"nfe_forward": Metric("forward NFE", "tolerance"), "nfe_backward": Metric("backward NFE", "tolerance")},
    model_labels=LABELS,
    dataset_labels={"mnist": "MNIST", "cifar10": "CIFAR10"},
    config_class=NFEToleranceConfig,
    summary="The thesis shows (figure only) that the forward and backward NFE of HBNODE and GHBNODE grow much "
            "more slowly than those of NODE, ANODE and SONODE as the tolerance tightens.",
    profiles={
        "smoke": {"dataset": "mnist", "tolerances": (1e-1, 1e-2), "batch_size": 16, "train_subset": 16,
                  "test_subset": 16},
        # about 80 s of training (two epochs of 256 images leave chance accuracy) and 45 s of probing
        "quick": {"dataset": "mnist", "protocol": "probe", "tolerances": (1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
                  "tol": 1e-2, "epochs": 2, "batch_size": 32, "train_subset": 256, "test_subset": 128},
        "full": {"train_subset": 0, "test_subset": 0},
    },
    run=run,
    claims={f"slower_{d}_growth": heavy_ball_beats(f"growth_{d}", FIRST_ORDER_AND_SONODE, "Fig 3.8",
                                                   f"As the tolerance tightens, the {d} NFE of HBNODE and GHBNODE grow "
                                                   "much more slowly than those of NODE, ANODE and SONODE.")
            for d in ("forward", "backward")},
    # The quick and smoke profiles read MNIST; the full profile downloads CIFAR10 when it runs.
    missing_data=lambda root, config: images.IMAGE_DATA[config.dataset].missing(root)
    if config.dataset in images.IMAGE_DATA else [],
    download=lambda root, config: images.IMAGE_DATA[config.dataset].download(root),
)
