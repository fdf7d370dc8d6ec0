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
from .block import ODEBlock, OneBlock

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


class CNF(OneBlock, nn.Module):
    """One FFJORD block: ``z(T)`` from ``z(0)`` by ``dz/dt = net(t, z)``, with the log-determinant.

    Args:
        net: the field, ``net(t, z) → dz/dt`` (e.g. :class:`ConcatMLP`, :class:`ConcatConvNet`).
        t_end: the integration time ``T``.
        trace: ``"hutchinson"`` (default) or ``"exact"`` (``D`` backward passes; small ``D``).
        noise: Hutchinson's noise, ``"rademacher"`` (the original's default) or ``"gaussian"``.
        regularise: also integrate the kinetic and Jacobian-Frobenius regularisers.
        train_t_end: learn ``T`` too (the original's ``train_T``): ``T = s²`` with ``s`` a parameter
            started at ``√t_end``, differentiated through the solve's end time
            (``∂z(T)/∂T = f(T, z(T))``) under every gradient mode.
        settings, **solve_keywords: how the engine integrates (``method``, ``rtol``, ``gradient``…,
            default dopri5 at 1e-5 with the adjoint, as the original).
    """

    def __init__(self, net: nn.Module, t_end: float = 1.0, *, trace: str = "hutchinson",
                 noise: str = "rademacher", regularise: bool = False, train_t_end: bool = False,
                 settings: SolveSettings | None = None, **solve_keywords: Any) -> None:
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        if t_end <= 0:
            raise ValueError(f"t_end must be positive, got {t_end}")
        self.noise = noise
        settings = SolveSettings.of(settings, solve_keywords, gradient="adjoint", rtol=1e-5, atol=1e-5)
        self.block = ODEBlock(CNFDynamics(net, trace, regularise), t_end, settings=settings)
        self.sqrt_t_end = nn.Parameter(torch.tensor(math.sqrt(t_end))) if train_t_end else None

    @property
    def dynamics(self) -> CNFDynamics:
        return self.block.dynamics

    @property
    def t_end(self) -> float:
        return self.block.t_end if self.sqrt_t_end is None else float(self.sqrt_t_end.detach()) ** 2

    def _times(self, z: torch.Tensor, reverse: bool) -> torch.Tensor:
        if self.sqrt_t_end is None:
            return torch.tensor([self.t_end, 0.0] if reverse else [0.0, self.t_end], dtype=z.dtype, device=z.device)
        end = self.sqrt_t_end.to(z.dtype).square().reshape(1)
        return torch.cat([end, end.new_zeros(1)] if reverse else [end.new_zeros(1), end])

    def forward(self, z: torch.Tensor, *, reverse: bool = False) -> FlowResult:
        """Flow ``z`` from ``t = 0`` to ``T`` (``reverse``: from ``T`` back to 0, for sampling)."""
        zeros = z.new_zeros(z.shape[0])
        state = (z, zeros) + ((zeros, zeros) if self.dynamics.regularise else ())
        final = tuple(y[-1] for y in self.block(state, times=self._times(z, reverse), args=self._noise(z)))
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


class ConcatConvNet(nn.Module):
    """``net(t, z)`` for images: 3×3 convolutions that each see ``[h, t]`` (FFJORD's "concat" layers,
    ``t`` as an extra constant channel), softplus between them; widths ``hidden`` (the original's
    64 → 64 → 64)."""

    def __init__(self, channels: int, hidden: tuple[int, ...] = (64, 64, 64)) -> None:
        super().__init__()
        widths = (channels, *hidden, channels)
        self.layers = nn.ModuleList(nn.Conv2d(a + 1, b, 3, padding=1) for a, b in itertools.pairwise(widths))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            time = t.to(h.dtype).expand(h.shape[0], 1, *h.shape[2:])
            h = layer(torch.cat([h, time], 1))
            if i < len(self.layers) - 1:
                h = nn.functional.softplus(h)
        return h


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, 4C, H/2, W/2): each 2×2 block of pixels becomes four channels (volume-preserving)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs even height and width, got {h}×{w}")
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    return x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


def logit_transform(x: torch.Tensor, alpha: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = logit(α + (1 − 2α) x)`` for ``x`` in [0, 1], and ``log |det ∂y/∂x|`` per sample.

    The original FFJORD's preprocessing of images (α = 1e-6): flows work on the real line, and the
    α keeps pixels at exactly 0 or 1 finite.
    """
    s = alpha + (1 - 2 * alpha) * x
    y = torch.log(s) - torch.log1p(-s)
    log_det = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
    return y, log_det


def dequantize(pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """8-bit pixel values (0…255) to [0, 1) with uniform noise: ``(x + u)/256``, ``u ~ U[0, 1)``."""
    noise = torch.rand(pixels.shape, generator=generator, dtype=torch.float32).to(pixels.device)
    return (pixels.to(torch.float32) + noise) / 256


def bits_per_dim(log_prob: torch.Tensor, dims: int) -> torch.Tensor:
    """Bits per dimension of 8-bit data from ``log p`` (nats) of its dequantised [0, 1) form:
    ``−log p / (D ln 2) + 8`` (the 1/256 scaling adds ``log₂ 256 = 8`` bits per dimension)."""
    return -log_prob / (dims * math.log(2)) + 8


class ODENVP(nn.Module):
    """The multiscale CNF of FFJORD for images (thesis §5.4.2): per scale, ``blocks`` CNFs on the
    current channels, then a squeeze; after each scale but the last, half the channels leave the
    flow and are scored by the base density directly.

    ``forward(x)`` takes images in [0, 1] (dequantised), applies the logit transform, and returns
    ``log p(x)`` per sample (nats); :func:`bits_per_dim` turns it into the thesis's metric.
    ``sample(n)`` draws from the model. Each CNF integrates with ``**solve_keywords``.
    """

    def __init__(self, shape: tuple[int, int, int], *, scales: int = 2, blocks: int = 2,
                 hidden: tuple[int, ...] = (64, 64, 64), alpha: float = 1e-6, trace: str = "hutchinson",
                 regularise: bool = False, train_t_end: bool = False, **solve_keywords: Any) -> None:
        super().__init__()
        c, h, w = shape
        if h % 2 ** (scales - 1) or w % 2 ** (scales - 1):
            raise ValueError(f"an image of {h}×{w} cannot be squeezed {scales - 1} times")
        self.shape, self.alpha, self.scales = shape, alpha, scales
        self.stages = nn.ModuleList()
        channels = c
        for scale in range(scales):
            self.stages.append(nn.ModuleList(
                CNF(ConcatConvNet(channels, hidden), trace=trace, regularise=regularise, train_t_end=train_t_end,
                    **solve_keywords)
                for _ in range(blocks)))
            if scale < scales - 1:
                channels = 4 * channels // 2  # squeeze, then half the channels leave

    @property
    def stats(self) -> SolveStats:
        """The counters of the latest call, summed over every block (``nfe_backward`` after ``backward()``)."""
        total = SolveStats()
        for blocks in self.stages:
            for block in blocks:
                total += block.stats
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, log_det = logit_transform(x, self.alpha)
        log_prob = log_det
        for scale, blocks in enumerate(self.stages):
            for block in blocks:
                out = block(z)
                z, log_prob = out.z, log_prob + out.log_det
            if scale < self.scales - 1:
                z = squeeze(z)
                z, factored = z.chunk(2, dim=1)
                log_prob = log_prob + standard_normal_log_prob(factored)
        return log_prob + standard_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [0, 1]: base noise flowed back through every scale, then the inverse logit."""
        c, h, w = self.shape
        shapes = []
        channels, size = c, (h, w)
        for scale in range(self.scales):
            shapes.append((channels, *size))
            if scale < self.scales - 1:
                channels, size = 2 * channels, (size[0] // 2, size[1] // 2)
        reference = next(self.parameters())
        dtype, device = reference.dtype, reference.device
        # drawn on the CPU (where the generator lives), then moved: the same samples on any device
        z = torch.randn(n, *shapes[-1], generator=generator, dtype=dtype).to(device)
        for scale in reversed(range(self.scales)):
            if scale < self.scales - 1:
                factored = torch.randn(n, *shapes[scale + 1], generator=generator, dtype=dtype).to(device)
                z = unsqueeze(torch.cat([z, factored], 1))  # forward kept the first half
            for block in reversed(self.stages[scale]):
                z = block(z, reverse=True).z
        s = torch.sigmoid(z)
        return ((s - self.alpha) / (1 - 2 * self.alpha)).clamp(0, 1)
