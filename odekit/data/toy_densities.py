"""2-D toy densities for continuous normalising flows (the shapes of the FFJORD paper's Fig. 2).

Each draws samples from a seeded ``torch.Generator``; those whose density is known in closed form
also give ``log_prob``, so a test or an experiment can compare a learned flow's likelihood with
the truth (the negative log-likelihood of the data can never go below the density's entropy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToyDensity:
    name: str
    sample: Callable[[int, torch.Generator], torch.Tensor]  # (n, 2), float64
    log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None  # per point; None: not in closed form


EIGHT_RADIUS, EIGHT_STD = 2.0, 0.3


def _eight_centres() -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    return EIGHT_RADIUS * torch.stack([angles.cos(), angles.sin()], 1)


def _eight_sample(n: int, generator: torch.Generator) -> torch.Tensor:
    which = torch.randint(0, 8, (n,), generator=generator)
    return _eight_centres()[which] + EIGHT_STD * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def _eight_log_prob(x: torch.Tensor) -> torch.Tensor:
    """An equal mixture of eight isotropic Gaussians on a circle."""
    centres = _eight_centres().to(x)
    squared = (x[:, None, :] - centres[None]).square().sum(-1) / EIGHT_STD**2
    return torch.logsumexp(-0.5 * squared, 1) - math.log(8) - math.log(2 * math.pi * EIGHT_STD**2)


def _moons_sample(n: int, generator: torch.Generator) -> torch.Tensor:
    upper = torch.rand(n, generator=generator) < 0.5
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    x = torch.where(upper, angle.cos(), 1 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    points = torch.stack([x - 0.5, y - 0.25], 1) * 2
    return points + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def _checkerboard_sample(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 unit squares of [−2, 2]² whose integer corners sum to an even number."""
    x = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    offset = (torch.rand(n, generator=generator, dtype=torch.float64)
              + 2 * torch.randint(0, 2, (n,), generator=generator))
    column = torch.floor(x).remainder(2)
    return torch.stack([x, offset - 2 + column], 1)


def _checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    inside = (x.abs() <= 2).all(1) & ((torch.floor(x[:, 0]) + torch.floor(x[:, 1])).remainder(2) == 0)
    return torch.where(inside, torch.full_like(x[:, 0], -math.log(8)), torch.full_like(x[:, 0], -math.inf))


TOY_DENSITIES = {
    "eight_gaussians": ToyDensity("eight_gaussians", _eight_sample, _eight_log_prob),
    "two_moons": ToyDensity("two_moons", _moons_sample),
    "checkerboard": ToyDensity("checkerboard", _checkerboard_sample, _checkerboard_log_prob),
}


def toy_density(name: str) -> ToyDensity:
    if name not in TOY_DENSITIES:
        raise ValueError(f"unknown toy density {name!r}; choose one of {', '.join(TOY_DENSITIES)}")
    return TOY_DENSITIES[name]
