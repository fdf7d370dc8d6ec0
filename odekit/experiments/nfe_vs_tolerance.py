"""``nfe_vs_tolerance`` — Fig 3.8: forward and backward NFE against the solver tolerance.

For each tolerance, each of the five models of Table 3.3 is trained from the same
initialisation (as in ``image_classification``) and we record the mean forward and backward
NFE per batch. The thesis sweeps tolerances 1e0 … 1e-5 on CIFAR10 (the authors' NFE plots);
the quick profile uses a small MNIST subset so that it runs on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..data import images
from ..models import MODEL_KINDS
from ..report.plots import pyplot
from .base import Experiment, RunContext
from .image_classification import LOADERS, ImageConfig, load_data, train_model
from .pointcloud import LABELS


@dataclass
class NFEToleranceConfig(ImageConfig):
    tolerances: tuple[float, ...] = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    dataset: str = "cifar10"
    epochs: int = 1
    lr: float = 1e-3


def run(config: NFEToleranceConfig, ctx: RunContext) -> None:
    if config.dataset not in LOADERS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(LOADERS)}")
    data = load_data(config, ctx.data_root)
    done = ctx.checkpoint.setdefault("cells", {})
    cells = [(kind, tol) for tol in config.tolerances for kind in config.models]
    with ctx.progress(len(cells) * config.epochs, "training at each tolerance") as advance:
        for kind, tol in cells:
            key = f"{kind}|{tol:g}"
            if key in done:
                advance(config.epochs)
                continue
            epochs = train_model(kind, dataclasses.replace(config, tol=tol), data, ctx.log, advance)
            done[key] = {"nfe_forward": float(np.mean([e["nfe_forward"] for e in epochs])),
                         "nfe_backward": float(np.mean([e["nfe_backward"] for e in epochs])),
                         "test_accuracy": epochs[-1]["test_accuracy"]}
            ctx.save_checkpoint()
    rows = [[LABELS[k], f"{t:g}", f"{done[f'{k}|{t:g}']['nfe_forward']:.1f}",
             f"{done[f'{k}|{t:g}']['nfe_backward']:.1f}", f"{done[f'{k}|{t:g}']['test_accuracy']:.4f}"]
            for k in config.models for t in config.tolerances]
    ctx.table("nfe_vs_tolerance", ["model", "tolerance", "forward NFE", "backward NFE", "test accuracy"], rows,
              caption=f"{config.dataset}: mean NFE per batch while training for {config.epochs} epoch(s) at each "
                      "tolerance (rtol = atol).")
    for kind in config.models:
        tight = f"{kind}|{min(config.tolerances):g}"
        ctx.metric(f"{LABELS[kind]}: forward / backward NFE at tolerance {min(config.tolerances):g}",
                   f"{done[tight]['nfe_forward']:.1f} / {done[tight]['nfe_backward']:.1f}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = dict(zip(MODEL_KINDS, "osD^v"))
    for kind in config.models:
        points = np.array([[done[f"{kind}|{t:g}"]["nfe_forward"], done[f"{kind}|{t:g}"]["nfe_backward"], t]
                           for t in config.tolerances])
        ax.plot(points[:, 0], points[:, 1], color="grey", linewidth=0.8, alpha=0.6)
        scatter = ax.scatter(points[:, 0], points[:, 1], c=np.log10(points[:, 2]), cmap="viridis",
                             marker=markers[kind], s=60, label=LABELS[kind], edgecolors="k")
    fig.colorbar(scatter, ax=ax, label="log10 tolerance")
    ax.set_xlabel("forward NFE per batch")
    ax.set_ylabel("backward NFE per batch")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"NFE vs tolerance ({config.dataset}; Fig. 3.8)")
    ctx.figure("nfe_vs_tolerance", fig, caption="Forward against backward NFE per batch, coloured by tolerance "
                                                "(Fig. 3.8); markers distinguish the models.")


EXPERIMENT = Experiment(
    name="nfe_vs_tolerance",
    quick_seconds=45,
    title="Forward and backward NFE against the solver tolerance",
    thesis_items="Fig 3.8",
    config_class=NFEToleranceConfig,
    summary="The thesis shows (figure only) that the forward and backward NFE of HBNODE and GHBNODE grow much "
            "more slowly than those of NODE, ANODE and SONODE as the tolerance tightens.",
    profiles={
        "smoke": {"dataset": "mnist", "tolerances": (1e-1, 1e-2), "batch_size": 16, "train_subset": 16,
                  "test_subset": 16},
        "quick": {"dataset": "mnist", "tolerances": (1e-2, 1e-3, 1e-4), "batch_size": 32, "train_subset": 32,
                  "test_subset": 64},
        "full": {"train_subset": 0, "test_subset": 0},
    },
    run=run,
    # The quick and smoke profiles read MNIST; the full profile downloads CIFAR10 when it runs.
    missing_data=images.mnist_missing,
    download=images.download_mnist,
)
