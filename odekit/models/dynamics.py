"""Dynamics of the model family: first order (NODE/ANODE), second order (SONODE), heavy ball.

Each is an ``nn.Module`` vector field ``(t, state) ↦ d state/dt`` over a tensor or a tuple
state, ready for :func:`odekit.solve`. The heavy-ball fields follow the thesis text:

* HBNODE (eq. 3.43): ``h' = m``, ``m' = −γ m + f(t, h)``;
* GHBNODE (eq. 3.56): ``h' = σ(m)``, ``m' = −γ m + f(t, h) − ξ h``;

with ``γ = ε·sigmoid(ω)`` and ``ξ = softplus(χ)``, each learnable or fixed. (The authors' code
stores ``−m`` instead of ``m``; the dynamics are the same up to that sign.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class FirstOrder(nn.Module):
    """``y' = f(t, y)`` — NODE, and ANODE when the state is zero-augmented (eq. 2.24 ff.)."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f(t, y)


class SecondOrder(nn.Module):
    """SONODE: ``x'' = f(t, x, x')`` as ``(x, v)' = (v, f(t, [x, v]))``, features concatenated on dim 1."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        x, v = state
        return v, self.f(t, torch.cat([x, v], dim=1))


def _inverse_sigmoid(p: float) -> float:
    return math.log(p / (1 - p))


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class HeavyBall(nn.Module):
    """(G)HBNODE dynamics on ``(h, m)``: eq. 3.43, or eq. 3.56 with a gate ``σ`` and a skip ``ξ``.

    Args:
        f: the network ``f(t, h)``.
        gamma: initial damping ``γ``; stored as ``ω`` with ``γ = epsilon·sigmoid(ω)``.
        learn_gamma: whether ``ω`` is trained.
        epsilon: the upper bound ``ε`` of ``γ`` (1 in the thesis).
        xi: the skip coefficient ``ξ`` (0 for HBNODE); stored as ``χ`` with ``ξ = softplus(χ)``.
        learn_xi: whether ``χ`` is trained.
        gate: ``"identity"`` (HBNODE), ``"tanh"`` (GHBNODE default) or ``"hardtanh"`` (±5, Fig. 3.3).
    """

    GATES = {"identity": lambda m: m, "tanh": torch.tanh, "hardtanh": lambda m: F.hardtanh(m, -5.0, 5.0)}

    def __init__(
        self,
        f: nn.Module,
        gamma: float = 1 / (1 + math.exp(3)),  # sigmoid(−3), the thesis's initial damping
        learn_gamma: bool = True,
        epsilon: float = 1.0,
        xi: float = 0.0,
        learn_xi: bool = False,
        gate: str = "identity",
    ) -> None:
        super().__init__()
        if not 0 < gamma < epsilon:
            raise ValueError(f"gamma must lie in (0, epsilon={epsilon}), got {gamma}")
        if xi < 0:
            raise ValueError(f"xi must be ≥ 0, got {xi}")
        if gate not in self.GATES:
            raise ValueError(f"unknown gate {gate!r}; choose one of {', '.join(self.GATES)}")
        self.f = f
        self.epsilon = epsilon
        omega = torch.tensor(_inverse_sigmoid(gamma / epsilon))
        self.omega = nn.Parameter(omega) if learn_gamma else nn.Buffer(omega)
        if xi > 0 or learn_xi:
            chi = torch.tensor(_inverse_softplus(max(xi, 1e-6)))
            self.chi = nn.Parameter(chi) if learn_xi else nn.Buffer(chi)
        else:
            self.chi = None
        self.gate_name = gate
        self.gate = self.GATES[gate]

    @property
    def gamma(self) -> torch.Tensor:
        return self.epsilon * torch.sigmoid(self.omega)

    @property
    def xi(self) -> torch.Tensor:
        return F.softplus(self.chi) if self.chi is not None else torch.zeros(())

    def own_parameters(self) -> tuple[nn.Parameter, ...]:
        """The trainable damping and skip parameters (``ω``, ``χ``), not those of ``f``."""
        return tuple(p for p in (self.omega, self.chi) if isinstance(p, nn.Parameter))

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], *args):
        """``args`` (the solve's ``args``) reach ``f`` unchanged: ``f(t, h, *args)``."""
        h, m = state
        dm = self.f(t, h, *args) - self.gamma * m
        if self.chi is not None:
            dm = dm - F.softplus(self.chi) * h
        return self.gate(m), dm


def hbnode(f: nn.Module, **kwargs) -> HeavyBall:
    """HBNODE dynamics (eq. 3.43)."""
    return HeavyBall(f, gate="identity", **kwargs)


def ghbnode(f: nn.Module, gate: str = "tanh", xi: float = math.log(2.0), learn_xi: bool = True,
            **kwargs) -> HeavyBall:
    """GHBNODE dynamics (eq. 3.56): tanh gate and a learnable ``ξ`` by default."""
    return HeavyBall(f, gate=gate, xi=xi, learn_xi=learn_xi, **kwargs)


@dataclass(frozen=True)
class Family:
    """One model of chapter 3's family: its label and how its dynamics wrap a network.

    ``components`` is 1 for a state ``h`` and 2 for ``(h, m)`` (SONODE's velocity, the heavy-ball
    momentum); ``inputs`` is the network's input width in units of the state width ``n`` (SONODE's
    network reads ``h`` and ``v``); ``wrap(network, **options)`` gives the dynamics (the options are
    the heavy-ball ones: ``xi``, ``learn_xi``, ``gamma``, …).
    """

    label: str
    components: int
    inputs: int
    wrap: Callable[..., nn.Module]

    def dynamics(self, make_network: Callable[[int], nn.Module], n: int, **options) -> nn.Module:
        """The dynamics around ``make_network(input width)`` for a state of width ``n``."""
        return self.wrap(make_network(self.inputs * n), **options)


FAMILIES: dict[str, Family] = {
    "node": Family("NODE", 1, 1, FirstOrder),
    "anode": Family("ANODE", 1, 1, FirstOrder),
    "sonode": Family("SONODE", 2, 2, SecondOrder),
    "hbnode": Family("HBNODE", 2, 1, hbnode),
    "ghbnode": Family("GHBNODE", 2, 1, ghbnode),
}
