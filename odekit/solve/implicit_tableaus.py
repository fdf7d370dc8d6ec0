"""Implicit Runge–Kutta tableaus as data: torchdiffeq's fixed-step implicit family.

An ``s``-stage Runge–Kutta method with a full matrix ``A`` advances

    k_i = f(t0 + c_i h, y0 + h Σ_j a_ij k_j),   i = 1 … s,
    y1  = y0 + h Σ_i b_i k_i

(Hairer & Wanner, *Solving ODEs II*, eq. IV.3.1). Where ``A`` is lower triangular (diagonally
implicit, DIRK) the stages can be solved one after another, each a single implicit equation in
``n`` unknowns; otherwise the ``s`` stages are coupled into one system of ``s·n`` unknowns.
:mod:`odekit.solve.implicit_rk` runs every tableau here with one solver class.

The coefficients are written from their closed forms:

* Gauss–Legendre (``gl4``, ``gl6``): ``c`` the zeros of the shifted Legendre polynomial
  ``P_s(2x − 1)``, ``A`` and ``b`` from the simplifying assumptions ``C(s)`` and ``B(2s)``
  (Hairer & Wanner II, Table IV.5.1 and 5.2); order ``2s``, A-stable, not L-stable.
* Radau IIA (``radauIIA3``, ``radauIIA5``): ``c`` the zeros of
  ``d^{s−1}/dx^{s−1}(x^{s−1}(x − 1)^s)``, ``c_s = 1``, ``A`` from ``C(s)`` and ``b`` the last row
  (Table IV.5.5 and 5.6); order ``2s − 1``, L-stable and stiffly accurate.
* SDIRK2 (Alexander 1977; Hairer & Wanner II, Table IV.6.1 with ``γ = 1 − √2/2``): the
  two-stage stiffly accurate, L-stable SDIRK of order 2.
* TR-BDF2 (Bank et al. 1985) as a three-stage ESDIRK with ``γ = 2 − √2``: a trapezoidal stage
  to ``t0 + γh``, then BDF2 through ``t0``, ``t0 + γh`` and ``t1``; stiffly accurate, L-stable,
  order 2 (Hosea & Shampine 1996 give the same tableau).
* ``implicit_euler``, ``implicit_midpoint`` (the one-stage Gauss method), ``trapezoid``
  (the two-stage Lobatto IIIA method, first stage explicit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImplicitTableau:
    """Coefficients of an implicit Runge–Kutta method: ``c``, the full ``s × s`` rows of ``a``, ``b``.

    ``order`` is the classical order of ``y1``. Validation checks the shapes and the row-sum
    condition ``Σ_j a_ij = c_i`` (which makes the method treat ``t`` like any other component).
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int

    def __post_init__(self) -> None:
        s = len(self.c)
        if s == 0 or len(self.a) != s or len(self.b) != s or any(len(row) != s for row in self.a):
            raise ValueError(f"tableau {self.name}: a must have {s} rows of {s} entries, b {s} entries")
        for i, row in enumerate(self.a):
            if abs(math.fsum(row) - self.c[i]) > 1e-13:
                raise ValueError(
                    f"tableau {self.name}: row {i} of a sums to {math.fsum(row)!r}, not c[{i}]={self.c[i]!r}")
        if abs(math.fsum(self.b) - 1.0) > 1e-13:
            raise ValueError(f"tableau {self.name}: the weights b sum to {math.fsum(self.b)!r}, not 1")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def diagonally_implicit(self) -> bool:
        """``A`` is lower triangular: stage ``i`` depends only on stages ``j ≤ i`` (solved one by one)."""
        return all(x == 0.0 for i, row in enumerate(self.a) for x in row[i + 1 :])

    @property
    def explicit_stages(self) -> tuple[int, ...]:
        """Stages with ``a_ii = 0``; in a diagonally implicit tableau these cost one ``f`` call each."""
        return tuple(i for i, row in enumerate(self.a) if row[i] == 0.0)

    @property
    def stiffly_accurate(self) -> bool:
        """``b`` is the last row of ``A`` (so ``y1`` is the last stage value and ``c_s = 1``)."""
        return tuple(self.b) == tuple(self.a[-1])

    def matrix(self) -> np.ndarray:
        """``A`` as an ``s × s`` float64 array."""
        return np.array(self.a, dtype=np.float64)


def _tableaus() -> list[ImplicitTableau]:
    r2, r3, r6, r15 = math.sqrt(2.0), math.sqrt(3.0), math.sqrt(6.0), math.sqrt(15.0)
    gamma = 1.0 - r2 / 2  # SDIRK2: the root of γ² − 2γ + 1/2 in (0, 1) that makes the method L-stable
    g = 2.0 - r2  # TR-BDF2: the trapezoidal stage ends at t0 + g h; its diagonal g/2 = 1 − √2/2 is the SDIRK γ
    return [
        ImplicitTableau("implicit_euler", c=(1.0,), a=((1.0,),), b=(1.0,), order=1),
        ImplicitTableau("implicit_midpoint", c=(0.5,), a=((0.5,),), b=(1.0,), order=2),
        ImplicitTableau("trapezoid", c=(0.0, 1.0), a=((0.0, 0.0), (0.5, 0.5)), b=(0.5, 0.5), order=2),
        ImplicitTableau(
            "radauIIA3",
            c=(1 / 3, 1.0),
            a=((5 / 12, -1 / 12), (3 / 4, 1 / 4)),
            b=(3 / 4, 1 / 4),
            order=3,
        ),
        ImplicitTableau(
            "radauIIA5",
            c=((4 - r6) / 10, (4 + r6) / 10, 1.0),
            a=(
                ((88 - 7 * r6) / 360, (296 - 169 * r6) / 1800, (-2 + 3 * r6) / 225),
                ((296 + 169 * r6) / 1800, (88 + 7 * r6) / 360, (-2 - 3 * r6) / 225),
                ((16 - r6) / 36, (16 + r6) / 36, 1 / 9),
            ),
            b=((16 - r6) / 36, (16 + r6) / 36, 1 / 9),
            order=5,
        ),
        ImplicitTableau(
            "gl4",
            c=(0.5 - r3 / 6, 0.5 + r3 / 6),
            a=((1 / 4, 1 / 4 - r3 / 6), (1 / 4 + r3 / 6, 1 / 4)),
            b=(0.5, 0.5),
            order=4,
        ),
        ImplicitTableau(
            "gl6",
            c=(0.5 - r15 / 10, 0.5, 0.5 + r15 / 10),
            a=(
                (5 / 36, 2 / 9 - r15 / 15, 5 / 36 - r15 / 30),
                (5 / 36 + r15 / 24, 2 / 9, 5 / 36 - r15 / 24),
                (5 / 36 + r15 / 30, 2 / 9 + r15 / 15, 5 / 36),
            ),
            b=(5 / 18, 4 / 9, 5 / 18),
            order=6,
        ),
        ImplicitTableau(
            "sdirk2",
            c=(gamma, 1.0),
            a=((gamma, 0.0), (1 - gamma, gamma)),
            b=(1 - gamma, gamma),
            order=2,
        ),
        ImplicitTableau(
            "trbdf2",
            c=(0.0, g, 1.0),
            a=((0.0, 0.0, 0.0), (g / 2, g / 2, 0.0), (r2 / 4, r2 / 4, g / 2)),
            b=(r2 / 4, r2 / 4, g / 2),
            order=2,
        ),
    ]


IMPLICIT_TABLEAUS: dict[str, ImplicitTableau] = {t.name: t for t in _tableaus()}

__all__ = ["IMPLICIT_TABLEAUS", "ImplicitTableau"]
