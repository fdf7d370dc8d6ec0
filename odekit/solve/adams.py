"""Fixed-grid Adams methods: torchdiffeq's ``explicit_adams``, ``implicit_adams`` and ``fixed_adams``.

An Adams method integrates the polynomial ``p`` that interpolates past slopes over the step
(Hairer, Nørsett & Wanner, *Solving ODEs I*, §III.1; variable steps §III.5):

    y_{n+1} = y_n + ∫_{t_n}^{t_{n+1}} p(s) ds = y_n + h Σ_j β_j f_j,   β_j = (1/h) ∫_{t_n}^{t_{n+1}} ℓ_j(s) ds,

with ``ℓ_j`` the Lagrange basis polynomials on the nodes and ``f_j = f(t_j, y_j)``.

* Adams–Bashforth of order ``k`` (explicit): nodes ``t_n, t_{n−1}, …, t_{n−k+1}``.
* Adams–Moulton of order ``k + 1`` (implicit): nodes ``t_{n+1}, t_n, …, t_{n−k+1}``; the
  equation ``y_{n+1} = y_n + h(β_0 f(t_{n+1}, y_{n+1}) + Σ_{j≥1} β_j f_{n+1−j})`` is solved by
  fixed-point iteration from the Bashforth predictor (P(EC)^m, at most ``max_iters`` times).

The weights are derived, not tabulated: exactly (``fractions.Fraction``) on a uniform grid, and
in float64 by Gauss–Legendre quadrature of ``ℓ_j`` for any other spacing (a clipped last step,
a non-uniform grid of output times), so the method keeps its order on every grid.

As in torchdiffeq, the history holds at most ``max_order − 1`` past slopes (each step evaluates
``f(t_n, y_n)`` once, at its start); while it holds fewer than three, the step is an ``rk4`` step
(Kutta's 3/8 rule). ``explicit_adams`` then has order ``max_order − 1`` and ``implicit_adams``
order ``max_order``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from .errors import InvalidInputError
from .integrate import linear_interpolation
from .methods import FIXED_OPTIONS, Method, positive_int_option
from .norms import ErrorScale
from .runge_kutta import RungeKutta
from .solution import SolveStats
from .tableaus import RK4

MAX_ORDER = 12
DEFAULT_MAX_ITERS = 4
ADAMS_OPTIONS = FIXED_OPTIONS + ("max_order", "max_iters")
_MIN_ORDER = 4  # Adams steps need at least three past slopes (order-3 Bashforth); before that, rk4
# The starter: odekit's rk4 (Kutta's 3/8 rule) from the slope the Adams step evaluated anyway.
_RK4 = RungeKutta(RK4)


def exact_weights(nodes: Sequence[Fraction | int], start: Fraction | int, end: Fraction | int) -> list[Fraction]:
    """``β_j = (1/(end − start)) ∫_start^end ℓ_j(s) ds`` in exact rational arithmetic.

    ``ℓ_j(s) = Π_{m≠j} (s − x_m)/(x_j − x_m)`` is expanded in monomials and integrated term by term.
    """
    nodes = [Fraction(x) for x in nodes]
    start, end = Fraction(start), Fraction(end)
    weights = []
    for j, xj in enumerate(nodes):
        coeffs = [Fraction(1)]  # ascending powers of s
        for m, xm in enumerate(nodes):
            if m == j:
                continue
            scale = 1 / (xj - xm)
            # (c_0 + c_1 s + …)·(s − x_m)/(x_j − x_m)
            shifted = [Fraction(0)] + coeffs
            coeffs = [(shifted[p] - xm * (coeffs[p] if p < len(coeffs) else 0)) * scale for p in range(len(shifted))]
        integral = sum(c * (end ** (p + 1) - start ** (p + 1)) / (p + 1) for p, c in enumerate(coeffs))
        weights.append(integral / (end - start))
    return weights


@functools.cache
def _gauss_legendre(points: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(points)


def float_weights(nodes: Sequence[float], start: float, end: float) -> list[float]:
    """``β_j = (1/(end − start)) ∫_start^end ℓ_j(s) ds`` in float64, for any distinct nodes.

    Gauss–Legendre quadrature with ``⌊n/2⌋ + 1`` points is exact for the degree ``n − 1`` of
    ``ℓ_j``; evaluating the basis in product form avoids the cancellation of a monomial expansion.
    """
    x = np.asarray(nodes, dtype=np.float64)
    n = x.size
    xi, w = _gauss_legendre(n // 2 + 1)
    q = start + (end - start) * (xi + 1) / 2  # quadrature points on [start, end]
    diffs = x[:, None] - x[None, :]
    np.fill_diagonal(diffs, 1.0)
    denominators = diffs.prod(axis=1)
    factors = np.broadcast_to(q[:, None, None] - x[None, None, :], (q.size, n, n)).copy()
    factors[:, np.arange(n), np.arange(n)] = 1.0  # leave out m = j
    basis = factors.prod(axis=2) / denominators  # basis[q, j] = ℓ_j(q)
    # ∫_start^end g ≈ (end − start)/2 Σ w_q g(q); dividing by (end − start) leaves w/2.
    return ((w / 2) @ basis).tolist()


@functools.cache
def bashforth(order: int) -> tuple[Fraction, ...]:
    """Uniform-step Adams–Bashforth weights of ``order`` for ``f_n, f_{n−1}, …`` (AB2: 3/2, −1/2)."""
    return tuple(exact_weights([-j for j in range(order)], 0, 1))


@functools.cache
def moulton(order: int) -> tuple[Fraction, ...]:
    """Uniform-step Adams–Moulton weights of ``order`` for ``f_{n+1}, f_n, …`` (AM3: 5/12, 8/12, −1/12)."""
    return tuple(exact_weights([1 - j for j in range(order)], 0, 1))


@dataclass(frozen=True)
class AdamsStep:
    """What one step leaves for the loop: its end state, its start slope, the updated history."""

    y1: torch.Tensor
    f0: torch.Tensor
    times: tuple[float, ...]  # newest first; times[0] is the step's start
    slopes: tuple[torch.Tensor, ...]


class CorrectorWarning(UserWarning):
    """Some Adams–Moulton corrector iterations stopped at ``max_iters`` without converging."""


class AdamsSolver:
    """Fixed-grid Adams–Bashforth(–Moulton) steps; the solver state is the history of past slopes.

    The corrector iteration stops when successive increments ``Δy = y_{n+1} − y_n`` agree,
    ``|Δy_new − Δy_old| ≤ atol + rtol·max(|Δy_old|, |Δy_new|)`` in every component (torchdiffeq's
    test); after ``max_iters`` evaluations the step is kept anyway and counted as a failure.
    """

    adaptive = False
    fsal = False

    def __init__(self, name: str, *, implicit: bool, max_order: int = MAX_ORDER, max_iters: int = DEFAULT_MAX_ITERS,
                 rtol: float | torch.Tensor = 1e-7, atol: float | torch.Tensor = 1e-9) -> None:
        self.name = name
        self.implicit = implicit
        self.max_order = max_order
        self.max_iters = max_iters
        self.rtol, self.atol = rtol, atol
        adams = max_order >= _MIN_ORDER
        self.order = (max_order if implicit else max_order - 1) if adams else RK4.order
        self.error_order = self.order + 1
        self._keep = max_order - 1 if adams else 0  # rk4 throughout needs no history
        self._uniform: dict[tuple[str, int, torch.dtype, torch.device], tuple[float, torch.Tensor]] = {}
        self._scale = ErrorScale(rtol, atol)
        self.steps = self.starter_steps = self.iterations = self.failures = 0

    def init(self, t0: float, y0: torch.Tensor, f0: torch.Tensor | None) -> tuple[tuple, tuple]:
        """Empty history: the start slope is evaluated by the first step itself."""
        return (), ()

    def step(self, field, t0: float, y0: torch.Tensor, h: float,
             state: tuple[tuple[float, ...], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, AdamsStep]:
        """Advance ``y0`` by ``h``: rk4 while the history is short, else Bashforth (and Moulton).

        ``state`` is the history ``(times, slopes)`` before this step, newest first.
        """
        past_times, past_slopes = state
        f0 = field(t0, y0, 1)
        times = ((t0,) + past_times)[: self._keep]
        slopes = ((f0,) + past_slopes)[: self._keep]
        self.steps += 1
        if len(slopes) < _MIN_ORDER - 1:
            self.starter_steps += 1
            y1, _ = _RK4.step(field, t0, y0, h, f0)
        else:
            y1 = self._adams(field, t0, y0, h, times, slopes)
        return y1, AdamsStep(y1, f0, times, slopes)

    def _adams(self, field, t0: float, y0: torch.Tensor, h: float, times: tuple[float, ...],
               slopes: tuple[torch.Tensor, ...]) -> torch.Tensor:
        k = len(slopes)
        nodes = [(t - t0) / h for t in times]  # 0, ≈ −1, ≈ −2, … in units of this step
        # Loop times carry a few ulps of rounding; within that the grid is uniform.
        tol = 1e-14 + 64 * math.ulp(max(abs(times[-1]), abs(t0 + h))) / abs(h)
        uniform = all(abs(s + j) <= tol for j, s in enumerate(nodes))
        history = torch.stack(slopes).T  # n × k, column j is f_{n−j}
        _, beta = self._weights("ab", k, nodes, uniform, y0)
        # The increment first, then one addition (addmv would round into y0 once per slope).
        y1 = torch.add(y0, torch.mv(history, beta), alpha=h)
        if not self.implicit:
            return y1
        # Corrector of order k + 1 on the nodes t_{n+1}, t_n, …: its past part is fixed during the iteration.
        gamma0, gamma = self._weights("am", k + 1, [1.0] + nodes, uniform, y0)
        base = torch.add(y0, torch.mv(history, gamma[1:]), alpha=h)
        implicit_weight = h * gamma0
        t1 = t0 + h
        converged = False
        for _ in range(self.max_iters):
            f1 = field(t1, y1, -1)
            y_new = torch.add(base, f1, alpha=implicit_weight)
            self.iterations += 1
            converged = self._agree(y1 - y0, y_new - y0)
            y1 = y_new
            if converged:
                break
        if not converged:
            self.failures += 1
        return y1

    def _weights(self, kind: str, k: int, nodes: list[float], uniform: bool,
                 y0: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Weights for the scaled ``nodes``: the first as a float, all as a tensor in the state's dtype.

        Uniform weights are exact fractions rounded once, cached per dtype and device.
        """
        if uniform:
            key = (kind, k, y0.dtype, y0.device)
            cached = self._uniform.get(key)
            if cached is None:
                exact = [float(x) for x in (bashforth(k) if kind == "ab" else moulton(k))]
                cached = self._uniform[key] = (exact[0], torch.tensor(exact, dtype=y0.dtype, device=y0.device))
            return cached
        weights = float_weights(nodes, 0.0, 1.0)
        return weights[0], torch.tensor(weights, dtype=y0.dtype, device=y0.device)

    def _agree(self, old: torch.Tensor, new: torch.Tensor) -> bool:
        """``|new − old| ≤ atol + rtol·max(|old|, |new|)`` elementwise (a max-norm ratio ≤ 1)."""
        with torch.no_grad():
            return bool(((new - old).abs() <= self._scale(old, new)).all())

    def error(self, K: AdamsStep) -> None:
        """No error estimate: the methods are fixed-grid only."""

    def interpolate(self, y0: torch.Tensor, K: AdamsStep, h: float, theta: torch.Tensor) -> torch.Tensor:
        """Linear between ``y0`` and ``y1`` at ``t0 + θh`` for each ``θ`` (shape m): an ``m × n`` tensor."""
        return linear_interpolation(y0, K.y1, theta)

    def accepted(self, state: Any, K: AdamsStep) -> tuple[tuple[float, ...], tuple[torch.Tensor, ...]]:
        """The history after the step: its start slope is the newest entry."""
        return K.times, K.slopes

    def start_slope(self, K: AdamsStep) -> torch.Tensor:
        """``f(t0, y0)`` of the step (every step evaluates it)."""
        return K.f0

    def record(self, stats: SolveStats) -> None:
        """Counters: rk4 starter steps and, for the implicit method, corrector iterations and failures."""
        extra = stats.extra
        counters = [("starter_steps", self.starter_steps)]
        if self.implicit:
            counters += [("corrector_iterations", self.iterations), ("corrector_failures", self.failures)]
        for key, value in counters:
            extra[key] = extra.get(key, 0) + value
        if self.failures:
            warnings.warn(
                f"{self.name}: corrector iteration did not converge in {self.failures} of "
                f"{self.steps - self.starter_steps} Adams steps within max_iters={self.max_iters}; the solution "
                "may be inaccurate (raise options['max_iters'], take smaller steps or loosen rtol/atol)",
                CorrectorWarning,
                stacklevel=2,
            )


def make_adams_solver(name: str, options: dict[str, Any], rtol: float | torch.Tensor = 1e-7,
                      atol: float | torch.Tensor = 1e-9, *, implicit: bool) -> AdamsSolver:
    """The solver of ``name`` from its options (``max_order`` ≤ 12, default 12; ``max_iters``, default 4)."""
    max_order = positive_int_option(options, "max_order", MAX_ORDER)
    if max_order > MAX_ORDER:
        raise InvalidInputError(f"option max_order of {name} must be at most {MAX_ORDER}, got {max_order}")
    if max_order < _MIN_ORDER:
        warnings.warn(f"max_order={max_order} is below {_MIN_ORDER}: {name} reduces to rk4", stacklevel=2)
    max_iters = positive_int_option(options, "max_iters", DEFAULT_MAX_ITERS)
    return AdamsSolver(name, implicit=implicit, max_order=max_order, max_iters=max_iters, rtol=rtol, atol=atol)


ADAMS_METHODS = tuple(
    Method(
        name=name,
        make_solver=lambda options, rtol, atol, _n=name, _i=implicit: make_adams_solver(
            _n, options, rtol, atol, implicit=_i),
        adaptive=False,
        options=ADAMS_OPTIONS,
        description=f"{what}, fixed grid, order up to {MAX_ORDER} (option max_order); rk4 starter",
    )
    for name, implicit, what in (
        ("explicit_adams", False, "Adams–Bashforth"),
        ("implicit_adams", True, "Adams–Bashforth predictor, Adams–Moulton corrector"),
        ("fixed_adams", True, "alias of implicit_adams (torchdiffeq's old name)"),
    )
)

__all__ = ["ADAMS_OPTIONS", "AdamsSolver", "AdamsStep", "CorrectorWarning", "bashforth", "exact_weights",
           "float_weights", "make_adams_solver", "moulton"]
