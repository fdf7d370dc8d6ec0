"""Implicit schemes of chapter 5 written as sequences of proximal stages.

Each stage is one implicit equation ``z = p + σ f(t, z)`` — the stationarity condition of the
proximal problem ``min_z ‖z − p‖²/(2σ) + F(z)`` — and a scheme only says which ``(t, σ, p)``
its stages have. The inner solvers (:mod:`odekit.solve.inner`) are the same for all schemes.

* backward differences of order 1–4 (backward Euler 5.4–5.5, BDF2–4 of §5.2.3), with
  coefficients derived from the actual step times, so the same code takes uniform steps (the
  standard BDF coefficients, the authors' proximal-solver code), the clipped last step of a fixed grid, and
  the variable steps of the adaptive solver;
* Crank–Nicolson (eq. 5.12): ``σ = h/2``, ``p = y_n + (h/2) f(t_n, y_n)``;
* single-step multi-stage schemes (Algorithm 2) given by their lower-triangular matrix Λ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import torch

Field = Callable[[float, torch.Tensor], torch.Tensor]
# solve_stage(t, sigma, center) -> z: one inner solve (warm start chosen by the caller)
StageSolver = Callable[[float, float, torch.Tensor], torch.Tensor]


def lagrange_weights(nodes: Sequence[float], x: float) -> list[float]:
    """Weights ``ℓ_j(x)`` of the interpolating polynomial through ``nodes``: ``p(x) = Σ ℓ_j(x) y_j``."""
    weights = []
    for j, tj in enumerate(nodes):
        w = 1.0
        for m, tm in enumerate(nodes):
            if m != j:
                w *= (x - tm) / (tj - tm)
        weights.append(w)
    return weights


def derivative_weights_at_first(nodes: Sequence[float]) -> list[float]:
    """Weights ``ℓ_j'(x_0)`` of the interpolant's derivative at the first node ``x_0``."""
    x0 = nodes[0]
    weights = [sum(1.0 / (x0 - tm) for tm in nodes[1:])]
    for j in range(1, len(nodes)):
        w = 1.0 / (nodes[j] - x0)
        for m in range(1, len(nodes)):
            if m != j:
                w *= (x0 - nodes[m]) / (nodes[j] - nodes[m])
        weights.append(w)
    return weights


def combine(weights: Sequence[float], states: Sequence[torch.Tensor]) -> torch.Tensor:
    out = weights[0] * states[0]
    for w, s in zip(weights[1:], states[1:]):
        out = out + w * s
    return out


class Scheme(Protocol):
    name: str
    order: int
    history: int  # past points the scheme reads (y_n, y_{n−1}, …)

    def advance(self, field: Field, times: list[float], states: list[torch.Tensor], t1: float,
                solve_stage: StageSolver) -> torch.Tensor:
        """The new state at ``t1`` from the past points (oldest first, ``times[-1] = t_n``)."""


@dataclass(frozen=True)
class BackwardDifference:
    """BDF of order ``order`` (1 = backward Euler), lower orders while history is short.

    With ``q`` past points the new state solves ``p'(t1) = f(t1, z)`` for the polynomial ``p``
    through ``(t1, z)`` and the points: ``w_0 z + Σ_j w_j y_j = f(t1, z)`` with ``w_j = ℓ_j'(t1)``,
    i.e. one proximal stage with ``σ = 1/w_0`` and ``p = −Σ_{j≥1} w_j y_j / w_0``. On a uniform
    grid this is ``(25/12) z − 4y_n + 3y_{n−1} − (4/3)y_{n−2} + (1/4)y_{n−3} = h f(z)`` for
    BDF4, and so on (the authors' proximal-solver code has the corrected indices of the thesis's BDF4).
    """

    order: int

    @property
    def name(self) -> str:
        return "backward Euler" if self.order == 1 else f"BDF{self.order}"

    @property
    def history(self) -> int:
        return self.order

    def advance(self, field, times, states, t1, solve_stage):
        q = min(self.order, len(states))
        nodes = [t1, *reversed(times[-q:])]
        w = derivative_weights_at_first(nodes)
        center = combine([-wj / w[0] for wj in w[1:]], list(reversed(states[-q:])))
        return solve_stage(t1, 1.0 / w[0], center)


@dataclass(frozen=True)
class CrankNicolson:
    """Trapezoidal rule ``z = y_n + (h/2)(f(t_n, y_n) + f(t1, z))`` (proximal form eq. 5.12).

    ``f(t_n, y_n)`` is evaluated once per step, as in the authors' code.
    """

    name: str = "Crank–Nicolson"
    order: int = 2
    history: int = 1

    def advance(self, field, times, states, t1, solve_stage):
        half = 0.5 * (t1 - times[-1])
        return solve_stage(t1, half, states[-1] + half * field(times[-1], states[-1]))


@dataclass(frozen=True)
class MultiStage:
    """Single-step multi-stage scheme of Algorithm 2 from a lower-triangular matrix Λ.

    Stage ``m`` solves ``z_m = argmin Σ_{i<m} γ_{m,i} ‖z − z_i‖²/(2s) + F(z)``, i.e. one proximal
    stage with ``σ = s/Σ_i γ_{m,i}`` and ``p = Σ_i γ_{m,i} z_i / Σ_i γ_{m,i}`` (``z_0 = y_n``).
    The stage times ``c_m`` follow from consistency, ``Σ_i γ_{m,i}(c_m − c_i) = 1``.
    """

    name: str
    order: int
    gammas: tuple[tuple[float, ...], ...]
    history: int = 1

    @property
    def stage_times(self) -> tuple[float, ...]:
        c = [0.0]
        for row in self.gammas:
            c.append((1.0 + sum(g * ci for g, ci in zip(row, c))) / sum(row))
        return tuple(c)

    def advance(self, field, times, states, t1, solve_stage):
        t0 = times[-1]
        h = t1 - t0
        stages = [states[-1]]
        for row, c in zip(self.gammas, self.stage_times[1:]):
            total = sum(row)
            stages.append(solve_stage(t0 + c * h, h / total, combine([g / total for g in row], stages)))
        return stages[-1]


def _rows(matrix: Sequence[Sequence[float | Fraction]]) -> tuple[tuple[float, ...], ...]:
    """Λ's rows without the zeros above the diagonal."""
    return tuple(tuple(float(x) for x in row[: i + 1]) for i, row in enumerate(matrix))


# Λ of §5.5: the second-order unconditionally stable 3-stage scheme, exactly as printed.
LAMBDA_2 = _rows([[5, 0, 0], [-2, 6, 0], [-2, Fraction(3, 14), Fraction(44, 7)]])
# The third-order 6-stage Λ is printed rounded to two decimals, which breaks its order
# conditions at the 1e-3 level (the scheme then converges at first order). These entries are the
# smallest change to the printed ones (at most 0.0032 each, so they round to the printed values)
# that satisfies the four conditions of order 3 (Σb = 1, Σbc = 1/2, Σbc² = 1/3, ΣbAc = 1/6 of
# the equivalent diagonally implicit RK method); tests/test_proximal.py checks both facts.
LAMBDA_3 = (
    (11.1685913163,),
    (-7.50047236671, 19.4292384436),
    (-1.04956930202, -4.75097688283, 13.9779859309),
    (1.79963306338, 0.0485493428971, -7.83268394473, 13.7968880373),
    (6.19944630378, -7.17091498532, -1.33138023875, 1.62825814786, 11.5189148151),
    (-2.83202857855, 4.68789871271, 2.45778408624, -11.5523011832, 6.67808809985, 11.9487196154),
)
LAMBDA_3_PRINTED = (
    (11.17,), (-7.5, 19.43), (-1.05, -4.75, 13.98), (1.8, 0.05, -7.83, 13.8),
    (6.2, -7.17, -1.33, 1.63, 11.52), (-2.83, 4.69, 2.46, -11.55, 6.68, 11.95),
)

SCHEMES: dict[str, Scheme] = {
    "prox_be": BackwardDifference(1),
    "prox_cn": CrankNicolson(),
    "prox_bdf2": BackwardDifference(2),
    "prox_bdf3": BackwardDifference(3),
    "prox_bdf4": BackwardDifference(4),
    "prox_ms2": MultiStage("3-stage, 2nd order", 2, LAMBDA_2),
    "prox_ms3": MultiStage("6-stage, 3rd order", 3, LAMBDA_3),
}
