"""Continuous normalising flows (FFJORD; thesis §5.4.2) on the odekit engine.

A CNF moves a sample by ``dz/dt = f(t, z)`` and its log-density by the instantaneous change of
variables ``d log p(z(t))/dt = −tr(∂f/∂z)`` (Chen et al. 2018, Grathwohl et al. 2019), so for
``z = z(T)`` flowed from ``x = z(0)``

    log p(x) = log p_base(z) + ∫₀ᵀ tr(∂f/∂z(t)) dt.

The trace is exact (``D`` vector–Jacobian products: for small dimensions) or Hutchinson's unbiased
estimate ``εᵀ(∂f/∂z)ε`` with one noise draw ``ε`` per solve, Rademacher or Gaussian (one product).
The optional regularisers of Finlay et al. (2020) integrate alongside: the kinetic energy
``∫‖f‖²`` and the Jacobian's Frobenius norm ``∫‖εᵀ ∂f/∂z‖²``. Every engine method and gradient
mode integrates the augmented state, the proximal and implicit ones included.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import torch
from torch import nn

from ..solve import SolveStats
from ..solve.spec import SolveSettings

TRACES = ("hutchinson", "exact")
NOISES = ("rademacher", "gaussian")


class CNFDynamics(nn.Module):
    """The field on the augmented state ``(z, ∫tr, ∫‖f‖², ∫‖εᵀJ‖²)`` (the last two only when regularising).

    ``net(t, z)`` is the flow's field; the noise ``ε`` (shaped like ``z``) arrives as the solve's
    ``args`` so that it stays fixed over one integration, as Hutchinson's estimator needs.
    """

    def __init__(self, net: nn.Module, trace: str = "hutchinson", regularise: bool = False) -> None:
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
        self.net, self.trace, self.regularise = net, trace, regularise

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...], noise: torch.Tensor):
        z = state[0]
        keep_graph = torch.is_grad_enabled()  # the trace must be differentiable when anything is trained
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.net(t, z)
            if self.trace == "exact":
                trace = exact_trace(dz, z, keep_graph)
                noise_jacobian = None
            else:
                (noise_jacobian,) = torch.autograd.grad(dz, z, noise, create_graph=keep_graph)
                trace = (noise_jacobian * noise).flatten(1).sum(1)
        derivatives = (dz, trace)
        if self.regularise:
            if noise_jacobian is None:
                (noise_jacobian,) = torch.autograd.grad(dz, z, noise, create_graph=keep_graph, retain_graph=True)
            derivatives += (dz.square().flatten(1).sum(1), noise_jacobian.square().flatten(1).sum(1))
        return derivatives


def exact_trace(dz: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """``tr(∂f/∂z)`` per sample from one vector–Jacobian product per dimension."""
    flat = dz.flatten(1)
    columns = []
    for i in range(flat.shape[1]):
        (row,) = torch.autograd.grad(flat[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        columns.append(row.flatten(1)[:, i])
    return torch.stack(columns, 1).sum(1)


class FlowResult(NamedTuple):
    """Where the flow took the samples, and what the change of variables adds to their log-density.

    ``log_det`` per sample, so that ``log p(input) = log p(output) + log_det``: forward (``x → z``)
    it is ``∫₀ᵀ tr(∂f/∂z) dt`` and ``log p(x) = log p_base(z) + log_det``; reverse (``z → x``, sampling)
    its negative. ``kinetic``, ``jacobian``: the regularisers' integrals per sample (zeros when off).
    """

    z: torch.Tensor
    log_det: torch.Tensor
    kinetic: torch.Tensor
    jacobian: torch.Tensor


class CNF(nn.Module):
    """One FFJORD block: ``z(T)`` from ``z(0)`` by ``dz/dt = net(t, z)``, with the log-determinant.

    Args:
        net: the field, ``net(t, z) → dz/dt`` (e.g. :class:`ConcatMLP`, :class:`ConcatConvNet`).
        t_end: the integration time ``T``.
        trace: ``"hutchinson"`` (default) or ``"exact"`` (``D`` backward passes; small ``D``).
        noise: Hutchinson's noise, ``"rademacher"`` (the original's default) or ``"gaussian"``.
        regularise: also integrate the kinetic and Jacobian-Frobenius regularisers.
        settings, **solve_keywords: how the engine integrates (``method``, ``rtol``, ``gradient``…,
            default dopri5 at 1e-5 with the adjoint, as the original).
    """

    def __init__(self, net: nn.Module, t_end: float = 1.0, *, trace: str = "hutchinson",
                 noise: str = "rademacher", regularise: bool = False, settings: SolveSettings | None = None,
                 **solve_keywords: Any) -> None:
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        if t_end <= 0:
            raise ValueError(f"t_end must be positive, got {t_end}")
        self.dynamics = CNFDynamics(net, trace, regularise)
        self.t_end, self.noise = t_end, noise
        defaults = {"rtol": 1e-5, "atol": 1e-5, **solve_keywords}
        self.settings = SolveSettings.of(settings, defaults, gradient="adjoint")
        self.stats = SolveStats(method=self.settings.method)

    def forward(self, z: torch.Tensor, *, reverse: bool = False) -> FlowResult:
        """Flow ``z`` from ``t = 0`` to ``T`` (``reverse``: from ``T`` back to 0, for sampling)."""
        batch = z.shape[0]
        zeros = z.new_zeros(batch)
        state = (z, zeros) + ((zeros, zeros) if self.dynamics.regularise else ())
        t = torch.tensor([self.t_end, 0.0] if reverse else [0.0, self.t_end], dtype=z.dtype, device=z.device)
        sol = self.settings.solve(self.dynamics, state, t, args=self._noise(z),
                                  adjoint_params=tuple(p for p in self.parameters() if p.requires_grad))
        self.stats = sol.stats
        final = tuple(y[-1] for y in sol.ys)
        # integrating from T down to 0 accumulates the integrals with the opposite sign
        sign = -1.0 if reverse else 1.0
        extra = final[2:] if self.dynamics.regularise else (zeros, zeros)
        return FlowResult(final[0], final[1], sign * extra[0], sign * extra[1])

    def _noise(self, z: torch.Tensor) -> torch.Tensor:
        if self.noise == "gaussian":
            return torch.randn_like(z)
        return torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` per sample (all dimensions after the first)."""
    flat = z.flatten(1)
    return -0.5 * (flat.square().sum(1) + flat.shape[1] * math.log(2 * math.pi))


class ConcatMLP(nn.Module):
    """``net(t, z)`` for vectors: linear layers that each see ``[h, t]`` (FFJORD's "concat" layers),
    softplus between them (the thesis's CNF setting)."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (64, 64, 64)) -> None:
        super().__init__()
        widths = (dim, *hidden, dim)
        self.layers = nn.ModuleList(nn.Linear(a + 1, b) for a, b in itertools.pairwise(widths))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([h, t.expand(h.shape[0], 1).to(h.dtype)], 1))
            if i < len(self.layers) - 1:
                h = nn.functional.softplus(h)
        return h
