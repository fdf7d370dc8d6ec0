"""One training epoch of a continuous-depth model, with the NFE the thesis plots per batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..report import atomic
from ..report.records import Metric

# The metrics chapter 3's training experiments report per model (x: the epoch where one is given).
TRAINING_METRICS = {
    "test_loss": Metric("test loss after epoch", "epoch"),
    "test_accuracy": Metric("test accuracy after epoch", "epoch"),
    "final_training_loss": Metric("final training loss (mean over runs)"),
    "nfe_forward": Metric("forward NFE per training step (mean)"),
    "nfe_backward": Metric("backward NFE per training step (mean)"),
    "parameters": Metric("parameters"),
}


@dataclass
class EpochRecord:
    loss: float  # mean training loss over the batches
    nfe_forward: float  # mean per batch
    nfe_backward: float  # mean per batch
    seconds: float


def train_epoch(model: torch.nn.Module, optimiser: torch.optim.Optimizer, batches: Iterable[Any],
                loss_of: Callable[[Any], torch.Tensor], clip: float) -> EpochRecord:
    """For each batch: loss, backward, gradient-norm clipping at ``clip``, optimiser step.

    ``model.stats`` (an :class:`~odekit.solve.SolveStats` of the latest forward call) gives the
    forward NFE after the loss and the backward NFE after ``backward()``.
    """
    forward, backward, losses = [], [], []
    start = time.perf_counter()
    model.train()
    for batch in batches:
        optimiser.zero_grad()
        loss = loss_of(batch)
        forward.append(model.stats.nfe)
        loss.backward()
        backward.append(model.stats.nfe_backward)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimiser.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    model.eval()
    return EpochRecord(float(np.mean(losses)), float(np.mean(forward)), float(np.mean(backward)), seconds)


class EpochResume:
    """The state of an unfinished training, written atomically after every epoch, so that a stopped
    run continues from its last finished epoch instead of from the model's first.

    It holds the model's and optimiser's state dicts, the shuffling generator's state and the
    per-epoch records. ``path=None`` keeps nothing (callers that need no resume). The file outlives
    the training: the grid runner removes it once the trained cell's record is saved
    (:func:`~odekit.experiments.grid.unfinished_path`).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def restore(self, model: torch.nn.Module, optimiser: torch.optim.Optimizer,
                generator: torch.Generator) -> list[dict]:
        """Load the saved state into the three objects; returns the records of the finished epochs."""
        if self.path is None or not self.path.is_file():
            return []
        saved = torch.load(self.path, weights_only=False)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])  # dropout and noise drawn on the GPU
        return saved["records"]

    def save(self, model: torch.nn.Module, optimiser: torch.optim.Optimizer, generator: torch.Generator,
             records: list[dict]) -> None:
        if self.path is not None:
            atomic.write_torch(self.path, {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                           "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                                           "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized()
                                           else None, "records": records})
