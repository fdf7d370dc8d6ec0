"""Stiff test problems of chapter 5, with exact solutions.

* eq. 5.10, ``h' = 3h − 2 cos t − 4 sin t``, ``h(0) = 1``: exact ``h = cos t + sin t``; the
  ``e^{3t}`` mode makes every error grow (the test of error accumulation of Fig 5.2 a/b).
* eq. 5.11, ``h' = −50 (h − cos t)``, ``h(0) = 1``: exact
  ``h = (2500 cos t + 50 sin t + e^{−50t}) / 2501``; stiff (Fig 5.2 c/d).
* eq. 5.18, the 1-D heat equation ``∂h/∂t = ∂²h/∂x²`` on ``x ∈ [0, 1]`` with periodic boundary,
  central differences on ``n`` points (``Δx = 1/(n − 1)`` as in the thesis), so ``h' = −L h``
  with ``L`` the cyclic-graph Laplacian over ``Δx²``; exact by the discrete Fourier transform.
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
