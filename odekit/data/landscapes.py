"""Classical optimisation test functions with their gradients and minimisers (thesis §3.2.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Landscape:
    name: str
    value: Callable[[torch.Tensor], torch.Tensor]  # (..., 2) → (...)
    gradient: Callable[[torch.Tensor], torch.Tensor]  # (..., 2) → (..., 2)
    minimiser: tuple[float, float]
    box: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max for plots


def _rosenbrock(p: torch.Tensor) -> torch.Tensor:
    x, y = p[..., 0], p[..., 1]
    return 100 * (y - x**2) ** 2 + (1 - x) ** 2


def _rosenbrock_grad(p: torch.Tensor) -> torch.Tensor:
    x, y = p[..., 0], p[..., 1]
    return torch.stack([-400 * x * (y - x**2) - 2 * (1 - x), 200 * (y - x**2)], dim=-1)


_BEALE_C = (1.5, 2.25, 2.625)


def _beale(p: torch.Tensor) -> torch.Tensor:
    x, y = p[..., 0], p[..., 1]
    return sum((c - x + x * y**k) ** 2 for k, c in enumerate(_BEALE_C, start=1))


def _beale_grad(p: torch.Tensor) -> torch.Tensor:
    x, y = p[..., 0], p[..., 1]
    gx = sum(2 * (c - x + x * y**k) * (y**k - 1) for k, c in enumerate(_BEALE_C, start=1))
    gy = sum(2 * (c - x + x * y**k) * (k * x * y ** (k - 1)) for k, c in enumerate(_BEALE_C, start=1))
    return torch.stack([gx, gy], dim=-1)


LANDSCAPES = {
    "rosenbrock": Landscape("rosenbrock", _rosenbrock, _rosenbrock_grad, (1.0, 1.0), (-0.5, 1.5, -0.5, 1.5)),
    "beale": Landscape("beale", _beale, _beale_grad, (3.0, 0.5), (-0.5, 3.5, -1.0, 1.5)),
}
