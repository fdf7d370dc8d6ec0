"""Initial states of the model family: zero augmentation (ANODE) and learned momenta (§3.5)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import activation, mlp


class ZeroAugment(nn.Module):
    """Append ``extra`` zero features (vectors) or channels (images): ANODE's augmentation."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra == 0:
            return x
        return torch.cat([x, x.new_zeros(x.shape[0], self.extra, *x.shape[2:])], dim=1)


class VectorMomentum(nn.Module):
    """``(h0, m0) = (x, net(x))`` with ``net = fc → HTanh → fc → HTanh → fc`` (thesis §3.5.1).

    With ``hidden=None`` the network is a single dense layer (the Silverbox setting of §3.3.3).
    """

    def __init__(self, dim: int, hidden: int | None) -> None:
        super().__init__()
        self.net = nn.Linear(dim, dim) if hidden is None else mlp([dim, hidden, hidden, dim], "hardtanh")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.net(x)


class ImageMomentum(nn.Module):
    """Learned initial state for images (thesis §3.5.2).

    ``conv1×1 → LReLU → conv3×3 → LReLU → conv1×1`` maps the ``c`` input channels to ``2n − c``
    channels, which are concatenated with the image and split into ``h0`` (the image plus
    ``n − c`` learned channels) and ``m0`` (``n`` learned channels).
    """

    def __init__(self, in_channels: int, hidden: int, state_channels: int) -> None:
        super().__init__()
        if state_channels < in_channels:
            raise ValueError(f"state_channels={state_channels} must be ≥ in_channels={in_channels}")
        self.n = state_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), activation("leaky_relu"),
            nn.Conv2d(hidden, hidden, 3, padding=1), activation("leaky_relu"),
            nn.Conv2d(hidden, 2 * state_channels - in_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = torch.cat([x, self.net(x)], dim=1)
        return state[:, : self.n], state[:, self.n :]
