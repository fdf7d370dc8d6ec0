"""Training loop shared by the ODE-RNN hybrid experiments (plane vibration, Walker2d).

One model at a time: Adam with gradient-norm clipping, and — as the authors' scripts do — a fresh
Adam at a second learning rate from a given epoch. Per epoch it records the training loss, the
test loss, forward and backward NFE per batch and the wall time; the trained weights are written
atomically so that ``adjoint_decay`` can reuse them.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.plane_vibration import WindowSet
from ..models.sequence import ODERNN
from ..report import atomic


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
                 log: Callable[[str], None], advance: Callable[[], None], weights: Path | None = None) -> list[dict]:
    """Train ``model``; returns one record per epoch."""
    torch.manual_seed(plan.seed)
    shuffle = torch.Generator().manual_seed(plan.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=plan.lr)
    epochs = []
    for epoch in range(1, plan.epochs + 1):
        if epoch == plan.switch_epoch:
            optimiser = torch.optim.Adam(model.parameters(), lr=plan.lr_after)
        order = torch.randperm(len(train), generator=shuffle)
        forward, backward, losses = [], [], []
        start = time.perf_counter()
        model.train()
        for first in range(0, len(order), plan.batch_size):
            batch = train.subset(order[first: first + plan.batch_size])
            optimiser.zero_grad()
            loss, _ = hybrid_loss(model, batch, plan)
            forward.append(model.stats.nfe)
            loss.backward()
            backward.append(model.stats.nfe_backward)
            torch.nn.utils.clip_grad_norm_(model.parameters(), plan.clip)
            optimiser.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        model.eval()
        scores = evaluate(model, test, plan)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "test_loss": scores["loss"],
                  "test_forecast_mse": scores["forecast_mse"], "nfe_forward": float(np.mean(forward)),
                  "nfe_backward": float(np.mean(backward)), "test_nfe": scores["nfe"], "train_seconds": seconds}
        epochs.append(record)
        log(f"{label} epoch {epoch}: train {record['train_loss']:.4f}, test {record['test_loss']:.4f}, "
            f"NFE {record['nfe_forward']:.0f}/{record['nfe_backward']:.0f} per batch, {seconds:.0f} s")
        advance()
    if weights is not None:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic.write_bytes(weights, buffer.getvalue())
    return epochs


def shrink_parameters(model: torch.nn.Module, factor: float) -> None:
    """Multiply every parameter and buffer by ``factor`` (the authors' plane-vibration initialisation).

    Without it the linear jumps of an untrained hybrid amplify the state over 64 observations
    (to ~1e8 at the default initialisation) and the first adjoint solves underflow.
    """
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(factor)
