"""Fixed-step implicit Runge–Kutta methods (torchdiffeq's implicit family), stages solved by the inner solvers.

One step of an ``s``-stage method (Butcher form, Hairer & Wanner II, eq. IV.3.1) is

    k_i = f(t0 + c_i h, y0 + h Σ_j a_ij k_j),   y1 = y0 + h Σ_i b_i k_i,

with the tableaus of :mod:`odekit.solve.implicit_tableaus`. How the implicit stages are solved
depends on the shape of ``A``:

* diagonally implicit (``A`` lower triangular): stage ``i`` is one proximal stage
  ``z_i = p_i + σ_i f(t_i, z_i)`` with ``σ_i = h a_ii`` and ``p_i = y0 + h Σ_{j<i} a_ij k_j``,
  exactly the problem :class:`~odekit.solve.inner.ProximalProblem` poses, and
  ``k_i = (z_i − p_i)/σ_i`` without another evaluation; stages with ``a_ii = 0`` are one call of ``f``;
* fully implicit (Radau IIA, Gauss–Legendre): the stage increments ``W_i = Z_i − y0`` solve the
  coupled system (Hairer & Wanner II, eq. IV.8.2a)

      R(W) = W − h (A ⊗ I) F(y0 + W) = 0,   F(Z)_i = f(t0 + c_i h, Z_i),

  in ``s·n`` unknowns (:class:`CoupledStages`), and ``y1 = y0 + (bᵀA⁻¹ ⊗ I) W`` (eq. IV.8.2b),
  which is ``y0 + W_s`` for the stiffly accurate Radau IIA methods.

Either way the same :class:`~odekit.solve.inner.InnerSolver` runs the nonlinear solve: dense
Newton for systems of at most :data:`DENSE_NEWTON_MAX` unknowns, Jacobian-free Newton–Krylov
above (option ``inner`` picks any inner method; ``"fixed_point"`` is torchdiffeq's functional
iteration). Complex states use dense Newton at any size: GMRES here assumes real inner products.
Every operation is out of place, so backprop
through the inner iterations differentiates the step; the solves stop near machine precision
relative to the state's size so that this derivative is the derivative of a smooth map. With
option ``stage_gradient="implicit"`` (``solve(..., gradient="implicit")``) the stages are solved
without a graph and differentiated by the implicit function theorem instead
(:func:`~odekit.solve.inner.implicit_stage`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import InvalidInputError, choice_option
from .field import side_of
from .implicit_tableaus import IMPLICIT_TABLEAUS, ImplicitTableau
from .inner import (
    INNER_METHODS,
    JVP_MODES,
    STAGE_GRADIENT_OPTIONS,
    InnerSolver,
    ProximalProblem,
    StageGradient,
    difference_increment,
    forward_tangent,
)
from .integrate import linear_interpolation
from .methods import FIXED_OPTIONS, Method, positive_int_option
from .norms import rms_norm
from .solution import SolveStats

Field = Callable[..., torch.Tensor]

IMPLICIT_RK_OPTIONS = FIXED_OPTIONS + ("max_iters", "inner", "inner_tol", "jvp") + STAGE_GRADIENT_OPTIONS
DEFAULT_MAX_ITERS = 100  # torchdiffeq's default for its stage iteration
DENSE_NEWTON_MAX = 64  # largest system solved by dense Newton by default (it costs one f call per unknown)
# Stop the stage solve at residual (or Newton update) RMS ≤ tol·(1 + RMS|y0|): a few dozen ulps, above the
# round-off floor of r(z) in float32 and float64 alike, yet so tight that the computed step is a smooth
# function of its inputs (finite-difference gradient checks see no jumps from the iteration count).
DEFAULT_INNER_TOL_ULPS = 50.0
# Inner methods that work on complex states: they use no real inner product (GMRES, L-BFGS and the
# momentum restarts do).
_COMPLEX_INNER = ("newton", "fixed_point", "gd", "nesterov")


class CoupledStages:
    """The coupled stage equations of a fully implicit step, in the stage increments ``W`` (flat, ``s·n``).

    ``residual(w) = w − h (A ⊗ I) F(y0 + w)`` (Hairer & Wanner II, eq. IV.8.2a) and
    ``jvp(w, v, r) = v − h (A ⊗ I) F'(y0 + w) v``: the two methods the inner solvers call, as on
    :class:`~odekit.solve.inner.ProximalProblem`. ``F'`` is block diagonal (stage ``i`` depends on
    ``Z_i`` alone), so a product costs one ``f`` call per stage block that ``v`` touches: dense
    Newton's unit vectors need one call per column, not ``s``.
    """

    def __init__(self, field: Field, t0: float, y0: torch.Tensor, h: float, a: torch.Tensor,
                 c: list[float], jvp_mode: str = "finite_difference") -> None:
        self.field, self.y0, self.jvp_mode = field, y0, jvp_mode
        self.stages, self.n = len(c), y0.numel()
        self.times = [t0 + ci * h for ci in c]
        self.sides = [side_of(ci) for ci in c]
        self.ha = h * a
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (w, F(y0 + w)) of the last residual

    def derivatives(self, w: torch.Tensor) -> torch.Tensor:
        """``F(y0 + W)`` as an ``s × n`` tensor: the stage derivatives ``k_i``."""
        W = w.view(self.stages, self.n)
        return torch.stack([self.field(t, self.y0 + W[i], side)
                            for i, (t, side) in enumerate(zip(self.times, self.sides))])

    def residual(self, w: torch.Tensor) -> torch.Tensor:
        F = self.derivatives(w)
        self._last = (w, F)  # the inner methods take the product at the point whose residual they just formed
        return w - (self.ha @ F).reshape(-1)

    def fixed_point_map(self, w: torch.Tensor) -> torch.Tensor:
        """``G(W) = h (A ⊗ I) F(y0 + W)``, whose fixed point is the stages (``R = W − G(W)``)."""
        return (self.ha @ self.derivatives(w)).reshape(-1)

    def jvp(self, w: torch.Tensor, v: torch.Tensor, r_w: torch.Tensor) -> torch.Tensor:
        """``(∂R/∂W) v`` by finite differences of ``f`` per stage (or forward-mode autograd, ``jvp_mode``)."""
        V = v.view(self.stages, self.n)
        active = [i for i, touched in enumerate((V.detach() != 0).any(dim=1).tolist()) if touched]
        if not active:
            return torch.zeros_like(v)
        Z = self.y0 + w.view(self.stages, self.n)
        rows = []
        if self.jvp_mode == "finite_difference":
            F = self._last[1] if self._last is not None and self._last[0] is w else self.derivatives(w)
            for i in active:
                eps = difference_increment(Z[i], V[i])  # per stage block, as ProximalProblem.jvp
                rows.append((self.field(self.times[i], Z[i] + eps * V[i], self.sides[i]) - F[i]) / eps)
        else:
            for i in active:
                tangent = forward_tangent(self.field, self.times[i], Z[i], V[i], self.sides[i])
                rows.append(torch.zeros_like(V[i]) if tangent is None else tangent)
        return v - (self.ha[:, active] @ torch.stack(rows)).reshape(-1)


@dataclass
class ImplicitStep:
    """What a step leaves for the loop: ``y1``, ``f(t0, y0)`` if a stage computed it, and the stage
    derivatives (detached) that warm-start the next step."""

    y1: torch.Tensor
    f0: torch.Tensor | None
    stages: torch.Tensor  # s × n, detached


class _Coefficients:
    """The tableau as tensors of one dtype and device (built once per solve and dtype)."""

    def __init__(self, tableau: ImplicitTableau, dtype: torch.dtype, device: torch.device) -> None:
        A = tableau.matrix()
        self.a = torch.as_tensor(A, dtype=dtype, device=device)
        if not tableau.diagonally_implicit:
            # W = h (A ⊗ I) K  ⇒  K = (A⁻¹ ⊗ I) W / h and y1 = y0 + (bᵀA⁻¹ ⊗ I) W, computed once in float64.
            a_inv = np.linalg.inv(A)
            self.a_inv = torch.as_tensor(a_inv, dtype=dtype, device=device)
            self.d = torch.as_tensor(np.array(tableau.b) @ a_inv, dtype=dtype, device=device)


class ImplicitRungeKutta:
    """Fixed-step implicit Runge–Kutta solver over flat state vectors (the engine's ``Solver``).

    A new instance per solve (:func:`make_implicit_rk_solver`): it counts the inner solves. The
    solver state is the previous step's stage derivatives, which warm-start the next stage solves
    (they are good guesses on stiff problems too, where an explicit predictor overshoots).
    """

    fsal = False
    adaptive = False

    def __init__(self, tableau: ImplicitTableau, *, max_iters: int = DEFAULT_MAX_ITERS, inner: str | None = None,
                 inner_tol: float | None = None, jvp: str = JVP_MODES[0],
                 stage_gradient: StageGradient | None = None) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.order = tableau.order
        self.error_order = tableau.order + 1  # local error of an order-p step scales as h^(p+1)
        self.max_iters, self.inner, self.inner_tol, self.jvp = max_iters, inner, inner_tol, jvp
        self.stage_gradient = stage_gradient or StageGradient()
        self._c = [float(x) for x in tableau.c]
        self._a = [[float(x) for x in row] for row in tableau.a]
        self._b = [float(x) for x in tableau.b]
        self._sides = [side_of(c) for c in self._c]
        # An explicit first stage with c = 0 and a zero row is f(t0, y0).
        self._start_stage = 0 in tableau.explicit_stages and not any(self._a[0]) and self._c[0] == 0.0
        self._coefficients: dict[tuple[torch.dtype, torch.device], _Coefficients] = {}
        self._solvers: dict[tuple[str, torch.dtype], InnerSolver] = {}
        self.solves = self.iterations = self.iterations_max = self.failures = 0
        self.worst_residual = 0.0

    # --- the Solver protocol -------------------------------------------------------------------------

    def init(self, t0: float, y0: torch.Tensor, f0: torch.Tensor | None) -> torch.Tensor | None:
        """No warm start before the first step."""
        return None

    def accepted(self, state: torch.Tensor | None, K: ImplicitStep) -> torch.Tensor:
        """The accepted step's stage derivatives: the next step's warm start."""
        return K.stages

    def error(self, K: ImplicitStep) -> None:
        """Fixed step only: no error estimate (``None``)."""

    def start_slope(self, K: ImplicitStep) -> torch.Tensor | None:
        """``f(t0, y0)``: the tableau's explicit first stage, or the evaluation every step starts with."""
        return K.f0

    def interpolate(self, y0: torch.Tensor, K: ImplicitStep, h: float, theta: torch.Tensor) -> torch.Tensor:
        """Linear interpolation ``y0 + θ (y1 − y0)`` for each ``θ`` in ``theta`` (shape m), as ``m × n``."""
        return linear_interpolation(y0, K.y1, theta)

    def record(self, stats: SolveStats) -> str | None:
        """Add the inner-solve counters to ``stats.extra``; if some stage solves did not converge, return why."""
        extra = stats.extra
        for key, value in (("inner_solves", self.solves), ("inner_iterations", self.iterations),
                           ("inner_failures", self.failures)):
            extra[key] = extra.get(key, 0) + value
        extra["inner_iterations_max"] = max(extra.get("inner_iterations_max", 0), self.iterations_max)
        self.stage_gradient.report(stats)
        message = None
        if self.failures:
            message = (f"{self.name}: {self.failures} of {self.solves} stage solves did not converge within "
                       f"max_iters={self.max_iters} iterations (worst residual RMS {self.worst_residual:.3g}); the "
                       "solution may be inaccurate: take smaller steps, raise options['max_iters'], or set "
                       "options['inner']")
        self.solves = self.iterations = self.iterations_max = self.failures = 0
        self.worst_residual = 0.0
        return message

    def step(self, field: Field, t0: float, y0: torch.Tensor, h: float,
             state: torch.Tensor | None) -> tuple[torch.Tensor, ImplicitStep]:
        """Advance ``y0`` by ``h``; ``state`` holds the previous step's stage derivatives (or ``None``)."""
        key = (y0.dtype, y0.device)
        co = self._coefficients.get(key)
        if co is None:
            co = self._coefficients[key] = _Coefficients(self.tableau, y0.dtype, y0.device)
        real = y0.real.dtype
        tol = (self.inner_tol if self.inner_tol is not None else DEFAULT_INNER_TOL_ULPS * torch.finfo(real).eps) * (
            1.0 + float(rms_norm(y0.detach())))
        # f(t0, y0) on every step (torchdiffeq's methods evaluate it too): the first step's warm start
        # y0 + c_i h f0, and the start slope of the cubic fixed-grid output.
        f0 = None if self._start_stage else field(t0, y0, 1)
        if self.tableau.diagonally_implicit:
            return self._step_diagonal(field, t0, y0, h, state, tol, f0)
        return self._step_coupled(field, t0, y0, h, state, co, tol, f0)

    # --- the two kinds of step ----------------------------------------------------------------------

    def _step_diagonal(self, field: Field, t0: float, y0: torch.Tensor, h: float, previous: torch.Tensor | None,
                       tol: float, f0: torch.Tensor | None) -> tuple[torch.Tensor, ImplicitStep]:
        """Stage by stage: explicit stages are one call of ``f``, implicit ones one proximal stage each."""
        ks: list[torch.Tensor] = []
        for i, row in enumerate(self._a):
            value = y0
            for j in range(i):
                if row[j] != 0.0:
                    value = torch.add(value, ks[j], alpha=h * row[j])
            t = t0 + self._c[i] * h
            if row[i] == 0.0:
                ks.append(field(t, value, self._sides[i]))
                continue
            sigma = h * row[i]
            # Guess k_i: the previous step's k_i, else this step's latest stage derivative, else f0.
            k_guess = previous[i] if previous is not None else (ks[-1] if ks else f0)
            guess = value if k_guess is None else value + sigma * k_guess
            problem = ProximalProblem(field, t, value, sigma, self.jvp, self._sides[i])
            z = self._solve(problem, guess.detach(), y0.numel(), y0.dtype, tol)
            ks.append((z - value) / sigma)
            value = z
        if self.tableau.stiffly_accurate:
            y1 = value  # y1 is the last stage value: no cancellation-prone recombination
        else:
            y1 = y0
            for bi, k in zip(self._b, ks):
                if bi != 0.0:
                    y1 = torch.add(y1, k, alpha=h * bi)
        stages = torch.stack(ks).detach()
        return y1, ImplicitStep(y1, ks[0] if self._start_stage else f0, stages)

    def _step_coupled(self, field: Field, t0: float, y0: torch.Tensor, h: float, previous: torch.Tensor | None,
                      co: _Coefficients, tol: float, f0: torch.Tensor) -> tuple[torch.Tensor, ImplicitStep]:
        """All stages at once: Newton (or the configured inner method) on ``R(W) = 0``."""
        s, n = self.tableau.stages, y0.numel()
        # Warm start W = h (A ⊗ I) K_prev, the previous step's increments rescaled to this step; else the
        # explicit predictor W_i = c_i h f0.
        if previous is None:
            guess = (h * torch.as_tensor(self._c, dtype=f0.real.dtype, device=f0.device)[:, None] * f0.detach())
            guess = guess.to(y0.dtype).reshape(-1)
        else:
            guess = (h * (co.a @ previous)).reshape(-1)
        problem = CoupledStages(field, t0, y0, h, co.a, self._c, self.jvp)
        W = self._solve(problem, guess, s * n, y0.dtype, tol).view(s, n)
        y1 = y0 + W[-1] if self.tableau.stiffly_accurate else y0 + co.d @ W
        with torch.no_grad():
            stages = (co.a_inv @ W) / h
        return y1, ImplicitStep(y1, f0, stages)

    # --- the stage solves ---------------------------------------------------------------------------

    def _inner_solver(self, size: int, dtype: torch.dtype) -> InnerSolver:
        complex_state = dtype.is_complex
        method = self.inner or ("newton" if size <= DENSE_NEWTON_MAX or complex_state else "newton_krylov")
        if complex_state and method not in _COMPLEX_INNER:
            raise InvalidInputError(
                f"inner={method!r} uses real inner products and cannot solve complex stages; use one of "
                f"{', '.join(_COMPLEX_INNER)}"
            )
        key = (method, dtype)
        solver = self._solvers.get(key)
        if solver is None:
            # GMRES to 10√ε relative (at least 1e-6): finite-difference products are only √ε-accurate, so
            # more is wasted, and less would make each Newton iteration gain little.
            krylov_rtol = min(1e-2, max(1e-6, 10 * math.sqrt(torch.finfo(dtype).eps)))
            solver = self._solvers[key] = InnerSolver(method=method, max_iters=self.max_iters,
                                                      krylov_rtol=krylov_rtol)
        return solver

    def _solve(self, problem: Any, guess: torch.Tensor, size: int, dtype: torch.dtype, tol: float) -> torch.Tensor:
        implicit = self.stage_gradient.applies()
        with self.stage_gradient.without_graph(problem.field) if implicit else contextlib.nullcontext():
            result = self._inner_solver(size, dtype)(problem, guess, res_tol=tol, tol=tol)
        self.solves += 1
        self.iterations += result.iterations
        self.iterations_max = max(self.iterations_max, result.iterations)
        if not result.converged:
            self.failures += 1
            if math.isfinite(result.residual_norm):
                self.worst_residual = max(self.worst_residual, result.residual_norm)
            else:
                self.worst_residual = math.inf
        return self.stage_gradient.attach(problem, result.z) if implicit else result.z


def make_implicit_rk_solver(tableau: ImplicitTableau, options: dict[str, Any]) -> ImplicitRungeKutta:
    """A solver for ``tableau`` configured from the method options (``max_iters``, ``inner``, ``inner_tol``,
    ``jvp``, ``stage_gradient``, ``implicit_rtol``), validated here."""
    max_iters = positive_int_option(options, "max_iters", DEFAULT_MAX_ITERS)
    inner = options.get("inner")
    if inner is not None:
        choice_option("inner", inner, INNER_METHODS)
    inner_tol = options.get("inner_tol")
    if inner_tol is not None and not (isinstance(inner_tol, (int, float)) and 0 < inner_tol < 1):
        raise InvalidInputError(f"option inner_tol must be a number in (0, 1) (relative to 1 + RMS|y|), got "
                                f"{inner_tol!r}")
    jvp = choice_option("jvp", options.get("jvp", JVP_MODES[0]), JVP_MODES)
    return ImplicitRungeKutta(tableau, max_iters=max_iters, inner=inner,
                              inner_tol=None if inner_tol is None else float(inner_tol), jvp=jvp,
                              stage_gradient=StageGradient.from_options(options))


IMPLICIT_RK_METHODS = tuple(
    Method(
        name=tableau.name,
        make_solver=lambda options, rtol, atol, _t=tableau: make_implicit_rk_solver(_t, options),
        adaptive=False,
        options=IMPLICIT_RK_OPTIONS,
        description=f"implicit RK ({'diagonally implicit' if tableau.diagonally_implicit else 'fully implicit'}), "
        f"order {tableau.order}, {tableau.stages} stage{'s' if tableau.stages > 1 else ''}, fixed step; "
        "stages by Newton (option inner)",
    )
    for tableau in IMPLICIT_TABLEAUS.values()
)

__all__ = ["IMPLICIT_RK_OPTIONS", "CoupledStages", "ImplicitRungeKutta", "ImplicitStep", "make_implicit_rk_solver"]
