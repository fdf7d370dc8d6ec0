"""Stiff test problems of chapter 5, with exact solutions.

* eq. 5.10, ``h' = 3h − 2 cos t − 4 sin t``, ``h(0) = 1``: exact ``h = cos t + sin t``; the
  ``e^{3t}`` mode makes every error grow (the test of error accumulation of Fig 5.2 a/b).
* eq. 5.11, ``h' = −50 (h − cos t)``, ``h(0) = 1``: exact
  ``h = (2500 cos t + 50 sin t + e^{−50t}) / 2501``; stiff (Fig 5.2 c/d).
* eq. 5.18, the 1-D heat equation ``∂h/∂t = ∂²h/∂x²`` on ``x ∈ [0, 1]`` with periodic boundary,
  central differences on ``n`` points (``Δx = 1/(n − 1)`` as in the thesis), so ``h' = −L h``
  with ``L`` the cyclic-graph Laplacian over ``Δx²``; exact by the discrete Fourier transform.

And the classical nonlinear stiff test set (Hairer & Wanner, Solving ODEs II, §IV.1 and §IV.10),
for the stiff solvers and ``method="auto"``; each has its right-hand side in torch and in NumPy
(for SciPy's solvers), its initial state and its end time:

* :class:`Robertson`: chemical kinetics, rate constants 0.04, 10⁴, 3·10⁷ (stiffness ratio ~10¹¹);
* :class:`VanDerPol`: the relaxation oscillator ``y'' = μ((1 − y²)y' ) − y`` with μ = 1000;
* :class:`Brusselator`: 1-D reaction–diffusion, ``2N`` states (BRUSS, α = 1/50);
* :class:`LotkaVolterra`: a non-stiff control (predator–prey), where ``auto`` should stay explicit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


def unstable_scalar(t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Right-hand side of eq. 5.10."""
    return 3 * h - 2 * torch.cos(t) - 4 * torch.sin(t)


def unstable_scalar_exact(t: torch.Tensor) -> torch.Tensor:
    return torch.cos(t) + torch.sin(t)


def stiff_scalar(t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Right-hand side of eq. 5.11."""
    return -50 * (h - torch.cos(t))


def stiff_scalar_exact(t: torch.Tensor) -> torch.Tensor:
    return (2500 * torch.cos(t) + 50 * torch.sin(t) + torch.exp(-50 * t)) / 2501


SCALAR_PROBLEMS = {
    "eq5.10": (unstable_scalar, unstable_scalar_exact),
    "eq5.11": (stiff_scalar, stiff_scalar_exact),
}


@dataclass
class HeatEquation:
    """The discretised periodic heat equation (eq. 5.18) on ``n`` points.

    ``initial="randn"`` draws ``h(x, 0)`` from the standard Gaussian (seeded), which excites
    every Fourier mode, the stiff ones included; ``"bump"`` is the smooth profile
    ``exp(−(x − 1/2)² / 0.02)``.
    """

    n: int = 128
    initial: str = "randn"
    seed: int = 0
    dtype: torch.dtype = torch.float64
    y0: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if self.n < 3:
            raise ValueError(f"the heat equation needs at least 3 grid points, got n={self.n}")
        x = torch.linspace(0.0, 1.0, self.n, dtype=torch.float64)
        if self.initial == "randn":
            y0 = torch.randn(self.n, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
        elif self.initial == "bump":
            y0 = torch.exp(-((x - 0.5) ** 2) / 0.02)
        else:
            raise ValueError(f"initial must be 'randn' or 'bump', got {self.initial!r}")
        self.y0 = y0.to(self.dtype)
        self.inv_dx2 = float((self.n - 1) ** 2)

    def __call__(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``−L h``: ``(h_{i−1} − 2h_i + h_{i+1}) / Δx²`` with periodic neighbours."""
        # Neighbours by concatenation, not torch.roll: roll has no native forward-mode
        # derivative, and Newton–Krylov takes Jacobian–vector products by forward mode.
        left = torch.cat([h[..., -1:], h[..., :-1]], dim=-1)
        right = torch.cat([h[..., 1:], h[..., :1]], dim=-1)
        return (left + right - 2 * h) * self.inv_dx2

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of ``L`` (``h' = −Lh``), one per Fourier mode."""
        k = np.arange(self.n)
        return (2 - 2 * np.cos(2 * math.pi * k / self.n)) * self.inv_dx2

    @property
    def stiffness(self) -> float:
        """Largest decay rate, ``4/Δx²``: explicit steps must stay below a few times its inverse."""
        return float(self.eigenvalues.max())

    def exact(self, t: float) -> torch.Tensor:
        """``h(t) = F⁻¹(e^{−λt} F h(0))``."""
        spectrum = np.fft.fft(self.y0.double().numpy()) * np.exp(-self.eigenvalues * t)
        return torch.from_numpy(np.fft.ifft(spectrum).real.copy()).to(self.dtype)

    def jacobian(self) -> np.ndarray:
        """The dense Jacobian ``−L`` (for classical implicit reference solvers)."""
        eye = np.eye(self.n)
        return (np.roll(eye, 1, 0) + np.roll(eye, -1, 0) - 2 * eye) * self.inv_dx2


@dataclass(frozen=True)
class ClassicalProblem:
    """A test problem: ``f`` in torch (``__call__``) and NumPy (:meth:`numpy`), ``y0`` and ``t_end``."""

    name: str = ""
    t_end: float = 1.0
    stiff: bool = True

    @property
    def y0(self) -> torch.Tensor:
        return torch.tensor(self.initial(), dtype=torch.float64)

    def initial(self) -> list[float]:
        raise NotImplementedError

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._rhs(y, torch)

    def numpy(self, t: float, y: np.ndarray) -> np.ndarray:
        return self._rhs(y, np)

    def _rhs(self, y, xp):
        """The right-hand side with the array module ``xp`` (torch, numpy or jax.numpy)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Robertson(ClassicalProblem):
    """``y1' = −0.04 y1 + 10⁴ y2 y3``, ``y2' = 0.04 y1 − 10⁴ y2 y3 − 3·10⁷ y2²``, ``y3' = 3·10⁷ y2²``."""

    name: str = "robertson"
    t_end: float = 4e5

    def initial(self) -> list[float]:
        return [1.0, 0.0, 0.0]

    def _rhs(self, y, xp):
        slow, fast = 0.04 * y[0], 1e4 * y[1] * y[2]
        square = 3e7 * y[1] ** 2
        return xp.stack([fast - slow, slow - fast - square, square])


@dataclass(frozen=True)
class VanDerPol(ClassicalProblem):
    """``y1' = y2``, ``y2' = μ (1 − y1²) y2 − y1`` from ``(2, 0)``: slow phases of stiffness ~μ, fast jumps."""

    name: str = "van_der_pol"
    t_end: float = 3000.0
    mu: float = 1000.0

    def initial(self) -> list[float]:
        return [2.0, 0.0]

    def _rhs(self, y, xp):
        return xp.stack([y[1], self.mu * (1 - y[0] ** 2) * y[1] - y[0]])


@dataclass(frozen=True)
class Brusselator(ClassicalProblem):
    """BRUSS on ``N`` interior points: ``u' = 1 + u²v − 4u + α(N+1)² Δu``, ``v' = 3u − u²v + α(N+1)² Δv``,
    boundary ``u = 1``, ``v = 3``; ``u(x, 0) = 1 + sin 2πx``, ``v(x, 0) = 3``; state ``[u; v]``."""

    name: str = "brusselator"
    t_end: float = 10.0
    points: int = 40
    alpha: float = 1.0 / 50.0

    def initial(self) -> list[float]:
        x = np.arange(1, self.points + 1) / (self.points + 1)
        return list(1 + np.sin(2 * np.pi * x)) + [3.0] * self.points

    def _rhs(self, y, xp):
        n, k = self.points, self.alpha * (self.points + 1) ** 2
        u, v = y[:n], y[n:]

        def laplacian(w, edge: float):
            wall = w[:1] * 0 + edge
            padded = xp.concatenate([wall, w, wall])
            return padded[:-2] - 2 * w + padded[2:]

        reaction = u * u * v
        return xp.concatenate([1 + reaction - 4 * u + k * laplacian(u, 1.0), 3 * u - reaction + k * laplacian(v, 3.0)])


@dataclass(frozen=True)
class LotkaVolterra(ClassicalProblem):
    """``x' = 1.5x − xy``, ``y' = −3y + xy`` from ``(1, 1)``: a smooth non-stiff orbit."""

    name: str = "lotka_volterra"
    t_end: float = 15.0
    stiff: bool = False

    def initial(self) -> list[float]:
        return [1.0, 1.0]

    def _rhs(self, y, xp):
        return xp.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


CLASSICAL_PROBLEMS = {p.name: p for p in (Robertson(), VanDerPol(), Brusselator(), LotkaVolterra())}
