"""One training epoch of a continuous-depth model, with the NFE the thesis plots per batch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch


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
