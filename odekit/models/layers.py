"""Vector-field networks used by the continuous-depth models of chapter 3."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "hardtanh": lambda: nn.Hardtanh(-5.0, 5.0),  # HTanh of thesis §3.5.1: clipped to [−5, 5]
    "leaky_relu": lambda: nn.LeakyReLU(0.3),  # LReLU of eq. 3.87
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], act: str) -> nn.Sequential:
    """``fc → act → fc → act → … → fc`` with the given layer widths (no activation at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class MLPField(nn.Module):
    """``f(t, x) = MLP(x)``: an autonomous field on feature vectors (batch × features)."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, act: str = "elu", depth: int = 2) -> None:
        super().__init__()
        self.net = mlp([dim] + [hidden] * depth + [out or dim], act)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tpad(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Append a channel filled with ``t`` to an image batch (the "tpad" of thesis §3.5.2)."""
    return torch.cat([x, t.to(x.dtype).expand(x.shape[0], 1, *x.shape[2:])], dim=1)


class ConvTimeField(nn.Module):
    """``tpad → conv1×1 → ReLU → tpad → conv3×3 → ReLU → tpad → conv1×1`` (thesis §3.5.2).

    Maps ``in_channels`` to ``out_channels`` (default the same) through ``hidden`` channels.
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + 1, hidden, 1)
        self.conv2 = nn.Conv2d(hidden + 1, hidden, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden + 1, out_channels or in_channels, 1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(tpad(t, x)))
        x = torch.relu(self.conv2(tpad(t, x)))
        return self.conv3(tpad(t, x))


class LinearInterpolation(nn.Module):
    """A signal sampled at ``t = 0, dt, 2dt, …``, read at any ``t`` by linear interpolation."""

    def __init__(self, samples: torch.Tensor, dt: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("samples", samples.reshape(-1))
        self.dt = dt

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        position = (t / self.dt).clamp(0, len(self.samples) - 1)
        left = position.floor().long().clamp(max=len(self.samples) - 2)
        weight = (position - left).to(self.samples.dtype)
        return self.samples[left] * (1 - weight) + self.samples[left + 1] * weight


class InputDrivenLinear(nn.Module):
    """``f(t, x) = W [x, u(t)] + b``: a dense field driven by an exogenous signal ``u`` (thesis §3.3.3)."""

    def __init__(self, state_dim: int, out_dim: int, signal: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(state_dim + 1, out_dim)
        self.signal = signal

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u = self.signal(t).to(x.dtype).expand(x.shape[0], 1)
        return self.linear(torch.cat([x, u], dim=1))
