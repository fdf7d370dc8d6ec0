"""Variable-order, variable-step BDF and NDF (orders 1–5) with a modified Newton iteration.

The stiff default of odekit (Shampine & Reichelt, "The MATLAB ODE Suite", SIAM J. Sci. Comput.
18, 1997: the method of MATLAB's ``ode15s`` and of scipy's ``BDF``). The past solution is kept
as an array ``D`` of backward differences at one step size: ``D[0] = y_n``, ``D[j] = ∇ʲ y_n``.
A step of order ``q`` predicts ``y_p = Σ_{j≤q} D[j]`` and solves the corrector

    α_q (y − y_p) = h f(t_{n+1}, y) − Σ_{j=1..q} γ_j D[j],   γ_j = Σ_{i≤j} 1/i,  α_q = (1 − κ_q) γ_q,

whose local error is ``(κ_q γ_q + 1/(q + 1)) (y − y_p)``. ``κ = 0`` is the classical BDF;
Shampine's NDF coefficients κ = (−0.1850, −1/9, −0.0823, −0.0415, 0) for q = 1…5 trade a
little stability for a smaller error constant at the same cost (method ``ndf``).

The corrector is solved by a modified Newton iteration on ``(I − c J) δ = c f(y) − ψ − d``
with ``c = h/α_q``: the Jacobian ``J = ∂f/∂y`` is evaluated rarely (autograd's forward mode
for all columns at once, or finite differences) and kept across steps; its LU factorisation is
redone only when ``c`` changes; a fresh Jacobian is taken only when Newton fails to converge
with an old one (CVODE's and scipy's strategy). ``jacobian="auto"`` differences ``f`` column by
column for up to 16 components and uses autograd's forward mode (all columns in one vectorised
call) above that. States larger than ``dense_max`` use a
Jacobian-free Newton–Krylov iteration (GMRES on finite-difference products) instead, right-
preconditioned by the user's ``preconditioner(t, y, c)`` (returning ``v ↦ M v`` with
``M ≈ (I − c J)⁻¹``, as CVODE's ``psolve``) when given.

Step and order selection are the solver's own (the loop pairs it with
:class:`~odekit.solve.controller.SolverProposed`): the step stays constant for ``q + 1`` steps
after a change, then the order among ``q − 1, q, q + 1`` allowing the longest next step is
chosen. Newton failure halves the step.

With option ``stage_gradient="implicit"`` (``solve(..., gradient="implicit")``) Newton runs without
a graph and each converged corrector is differentiated by the implicit function theorem
(:func:`~odekit.solve.inner.implicit_stage`) instead of through the Newton iterations.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .controller import StepProposal
from .errors import InvalidInputError, NonFiniteError, choice_option, number_option
from .inner import STAGE_GRADIENT_OPTIONS, ProximalProblem, StageGradient, difference_increment, gmres
from .linear import DenseLU, SingularMatrixError, SparseLU, factorize, sparse_pattern
from .methods import ADAPTIVE_OPTIONS, Method
from .norms import Tolerance
from .solution import SolveStats

MAX_ORDER = 5
NDF_KAPPA = (0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0)
NEWTON_MAX_ITERS = 4
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
# Largest state solved with a dense Jacobian and LU; beyond it, Newton–Krylov. At 2048 an LU
# costs about as much as 2048 evaluations of a cheap field (docs/benchmarks.md, stiff suite).
DEFAULT_DENSE_MAX = 2048
JACOBIANS = ("auto", "autograd", "finite_difference")
# Up to this many components "auto" differences f column by column: vmap's fixed cost (~0.8 ms a
# Jacobian measured on the CPU) exceeds that many evaluations of a small field.
FINITE_DIFFERENCE_MAX = 16
LINEAR_SOLVERS = ("auto", "dense", "sparse", "krylov")

# Options of the stiff loop: no safety/ifactor/… (the step rule is the solver's own), no norm
# (Newton and the error test use the RMS norm, as scipy and CVODE do).
# Nor a fixed grid (step_size, grid_constructor and their perturb/interp): a step whose Newton
# iteration fails must be retried shorter, which a grid cannot do.
# A user's preconditioner for Newton–Krylov: (t, y, c) -> v ↦ M v with M ≈ (I − c ∂f/∂y)⁻¹ on flat vectors.
Preconditioner = Callable[[float, torch.Tensor, float], Callable[[torch.Tensor], torch.Tensor]]

BDF_OPTIONS = tuple(k for k in ADAPTIVE_OPTIONS if k not in (
    "safety", "ifactor", "dfactor", "pcoeff", "icoeff", "dcoeff", "norm",
    "step_size", "grid_constructor", "perturb", "interp")) + (
    "max_order", "jacobian", "linear_solver", "dense_max", "krylov_dim", "krylov_rtol",
    "preconditioner") + STAGE_GRADIENT_OPTIONS


def _coefficients(kappa: tuple[float, ...]) -> tuple[list[float], list[float], list[float]]:
    """``(γ_j, α_j, error constant_j)`` for j = 0…MAX_ORDER+1 (see the module docstring)."""
    kappa = tuple(kappa) + (0.0,)
    gamma = [0.0]
    for j in range(1, MAX_ORDER + 2):
        gamma.append(gamma[-1] + 1.0 / j)
    alpha = [(1 - k) * g for k, g in zip(kappa, gamma)]
    error = [k * g + 1.0 / (j + 1) for j, (k, g) in enumerate(zip(kappa, gamma))]
    return gamma, alpha, error


def rescale_matrix(order: int, factor: float) -> np.ndarray:
    """``R`` with ``D'[0..q] = Rᵀ D[0..q]`` the differences of the same polynomial at step ``factor·h``
    (Shampine & Reichelt, eq. 2.4: ``R[i, j] = Π_{m≤i} (m − 1 − factor·j)/m``). NumPy: a 6 × 6
    matrix is built faster there than as tensors."""
    i = np.arange(1, order + 1)[:, None]
    j = np.arange(1, order + 1)[None, :]
    M = np.zeros((order + 1, order + 1))
    M[0] = 1.0
    M[1:, 1:] = (i - 1 - factor * j) / i
    return np.cumprod(M, axis=0)


@dataclass
class Linearisation:
    """What Newton reuses across steps and retries: ``J`` (dense), whether it was taken at the current
    step, and the LU of ``I − c J`` for the ``c`` it was factored with. Mutated in place."""

    jacobian: torch.Tensor | None = None
    current: bool = False
    lu: DenseLU | SparseLU | None = None
    c: float = math.nan
    sparse: Any = None  # J as a SciPy sparse matrix when it is factored sparsely


@dataclass(frozen=True)
class BDFState:
    """Between accepted steps: the difference array at step ``h``, the order, steps taken at this ``h``."""

    t: float
    D: torch.Tensor  # (MAX_ORDER + 3) × n
    h: float
    order: int
    equal_steps: int
    linear: Linearisation = field(default_factory=Linearisation)


@dataclass
class BDFStep:
    """One attempted step: the updated differences, and the proposal for what comes next."""

    D: torch.Tensor
    t: float
    h: float
    order: int
    next_order: int
    equal_steps: int
    proposal: StepProposal | None  # None: Newton failed, the step must be retried shorter


class BDF:
    """The variable-order BDF/NDF solver (see the module docstring); one instance per solve."""

    fsal = True  # needs f(t0, y0) for the first difference
    adaptive = True
    restartable = False
    proposes_steps = True
    lands_on_end = True  # the loop shortens the last step to end on the last output time

    def __init__(self, name: str, kappa: tuple[float, ...], rtol: Tolerance, atol: Tolerance, *,
                 max_order: int = MAX_ORDER, jacobian: str = "auto", linear_solver: str = "auto",
                 dense_max: int = DEFAULT_DENSE_MAX, krylov_dim: int = 30, krylov_rtol: float = 0.1,
                 preconditioner: Preconditioner | None = None, stage_gradient: StageGradient | None = None) -> None:
        self.name = name
        self.order = max_order
        self.error_order = 2  # the first step is order 1, its local error O(h²) (sets the initial step)
        self.max_order = max_order
        self.gamma, self.alpha, self.error_const = _coefficients(kappa)
        self.rtol, self.atol = rtol, atol
        self.jacobian_mode, self.linear_solver, self.dense_max = jacobian, linear_solver, dense_max
        self.krylov_dim, self.krylov_rtol, self.preconditioner = krylov_dim, krylov_rtol, preconditioner
        self.stage_gradient = stage_gradient or StageGradient()
        self.newton_tol: float = math.nan  # set from the dtype at init
        self.counts = {"jacobians": 0, "autograd_jacobian_columns": 0, "lu_factorizations": 0, "newton_iterations": 0,
                       "newton_failures": 0, "jvps": 0, "singular_matrices": 0, "jacobian_fallbacks": 0}
        self._tols: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned_fallback = False

    # --- the loop's protocol ---------------------------------------------------------------

    def init(self, t0: float, y0: torch.Tensor, f0: torch.Tensor | None) -> BDFState:
        if y0.is_complex():
            raise InvalidInputError(f"method {self.name!r} needs a real state; got {y0.dtype}")
        eps = torch.finfo(y0.dtype).eps
        rtol = float(torch.as_tensor(self.rtol).min())
        self.newton_tol = max(10 * eps / rtol, min(0.03, rtol**0.5))
        self._tols = (torch.as_tensor(self.atol).to(y0), torch.as_tensor(self.rtol).to(y0))
        self._gamma = torch.tensor(self.gamma, dtype=y0.dtype, device=y0.device)
        # D[1] = h·f0 for the first step's h, which is not known yet: stored at "h = 1", the first
        # step rescales it (also after a switch from an explicit solver, which hands over its f).
        D = torch.cat([y0[None], f0[None], y0.new_zeros(MAX_ORDER + 1, y0.numel())])
        return BDFState(t0, D, 1.0, 1, 0)

    def step(self, field, t0: float, y0: torch.Tensor, h: float, state: BDFState) -> tuple[torch.Tensor, BDFStep]:
        order = state.order
        D, equal_steps = state.D, state.equal_steps
        if h != state.h:
            D = self._rescaled(D, order, h / state.h)
            equal_steps = 0
        t1 = t0 + h
        q = order
        predicted = D[: q + 1].sum(0)
        psi = (self._gamma[1 : q + 1] @ D[1 : q + 1]) / self.alpha[q]
        c = h / self.alpha[q]
        scale = self._scale(predicted)
        linear = state.linear
        implicit = self.stage_gradient.applies()
        with self.stage_gradient.without_graph(field) if implicit else contextlib.nullcontext():
            converged, d, y, iterations = self._newton(field, t1, predicted, psi, c, scale, linear, t0, y0)
            if not converged and iterations >= 0 and not linear.current and self._uses_dense(y0):
                # An old Jacobian: take a fresh one and try once more before shortening the step.
                self._refresh(field, t0, y0, linear)
                converged, d, y, iterations = self._newton(field, t1, predicted, psi, c, scale, linear, t0, y0)
        if implicit and converged:
            # The corrector solves y = (y_p − ψ) + c f(t1, y): a proximal stage with centre y_p − ψ, σ = c.
            y = self.stage_gradient.attach(ProximalProblem(field, t1, predicted - psi, c, side=-1), y)
            d = y - predicted
        if not converged:
            self.counts["newton_failures"] += 1
            # f went non-finite: a NaN ratio sends the loop down its non-finite path (retry shorter,
            # and after repeated failures a NonFiniteError); a slow iteration is a plain retry.
            proposal = None if iterations >= 0 else StepProposal(math.nan, False, 0.5 * h)
            return predicted, BDFStep(D, t1, h, q, q, equal_steps, proposal)
        scale = self._scale(y)
        error_norm = self._rms(self.error_const[q] * d.detach() / scale)
        safety = 0.9 * (2 * NEWTON_MAX_ITERS + 1) / (2 * NEWTON_MAX_ITERS + iterations)
        if not error_norm <= 1.0:
            factor = max(MIN_FACTOR, safety * error_norm ** (-1 / (q + 1))) if math.isfinite(error_norm) else MIN_FACTOR
            return y, BDFStep(D, t1, h, q, q, equal_steps, StepProposal(error_norm, False, h * factor))
        # Accepted: update the differences (D[q+2] is ∇^{q+2}, used only for the order-raise estimate).
        rows = list(D.unbind(0))
        rows[q + 2] = d - rows[q + 1]
        rows[q + 1] = d
        for i in range(q, -1, -1):
            rows[i] = rows[i] + rows[i + 1]
        D = torch.stack(rows)
        equal_steps += 1
        next_order, factor = q, 1.0
        if equal_steps >= q + 1:
            next_order, factor = self._choose_order(D, q, error_norm, scale, safety)
        return y, BDFStep(D, t1, h, q, next_order, equal_steps, StepProposal(error_norm, True, h * factor))

    def error(self, K: BDFStep) -> StepProposal | None:
        return K.proposal

    def accepted(self, state: BDFState, K: BDFStep) -> BDFState:
        state.linear.current = False
        return BDFState(K.t, K.D, K.h, K.next_order, K.equal_steps if K.next_order == K.order else 0, state.linear)

    def interpolate(self, y0: torch.Tensor, K: BDFStep, h: float, theta: torch.Tensor) -> torch.Tensor:
        """The step's interpolating polynomial: ``D[0] + Σ_j D[j] Π_{i<j} (θ − 1 + i)/(i + 1)``."""
        x = theta.to(K.D.dtype)[:, None] - 1.0
        i = torch.arange(K.order, dtype=K.D.dtype, device=K.D.device)[None, :]
        p = torch.cumprod((x + i) / (i + 1), dim=1)  # m × q
        return K.D[0] + p @ K.D[1 : K.order + 1]

    def start_slope(self, K: BDFStep) -> None:
        return None

    def record(self, stats: SolveStats) -> None:
        for key, value in self.counts.items():
            stats.extra[key] = stats.extra.get(key, 0) + value
        self.stage_gradient.report(stats)

    # --- pieces ------------------------------------------------------------------------------

    def _rescaled(self, D: torch.Tensor, order: int, factor: float) -> torch.Tensor:
        R = rescale_matrix(order, factor) @ rescale_matrix(order, 1.0)
        head = torch.from_numpy(R.T.copy()).to(D) @ D[: order + 1]
        return torch.cat([head, D[order + 1 :]])

    def _scale(self, y: torch.Tensor) -> torch.Tensor:
        atol, rtol = self._tols
        return torch.addcmul(atol, y.detach().abs(), rtol)

    @staticmethod
    def _rms(x: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(x)) / math.sqrt(x.numel()) if x.numel() else 0.0

    def _choose_order(self, D: torch.Tensor, q: int, error_norm: float, scale: torch.Tensor,
                      safety: float) -> tuple[int, float]:
        """The order among q−1, q, q+1 whose error estimate allows the longest next step, and that step's factor."""
        D = D.detach()
        lower = self._rms(self.error_const[q - 1] * D[q] / scale) if q > 1 else math.inf
        higher = self._rms(self.error_const[q + 1] * D[q + 2] / scale) if q < self.max_order else math.inf
        factors = [norm ** (-1.0 / (k + 1)) if norm > 0 else math.inf
                   for k, norm in ((q - 1, lower), (q, error_norm), (q + 1, higher))]
        best = max(range(3), key=lambda i: factors[i])
        return q + best - 1, min(MAX_FACTOR, safety * factors[best])

    def _uses_dense(self, y: torch.Tensor) -> bool:
        if self.linear_solver == "auto":
            return y.numel() <= self.dense_max
        return self.linear_solver != "krylov"

    def _refresh(self, field, t: float, y: torch.Tensor, linear: Linearisation) -> None:
        """A fresh Jacobian at ``(t, y)``; the LU is redone at its next use."""
        linear.jacobian = self._jacobian(field, t, y.detach())
        if not bool(torch.isfinite(linear.jacobian).all()):
            raise NonFiniteError(
                f"the Jacobian of f at t={t:.6g} has non-finite entries (NaN or inf); f is not differentiable "
                "there or overflows; check f (options={'jacobian': 'finite_difference'} if autograd is the culprit)")
        linear.sparse = sparse_pattern(linear.jacobian) if self.linear_solver in ("auto", "sparse") else None
        linear.current, linear.lu, linear.c = True, None, math.nan

    def _jacobian(self, field, t: float, y: torch.Tensor) -> torch.Tensor:
        n = y.numel()
        self.counts["jacobians"] += 1
        mode = self.jacobian_mode
        if mode == "auto":
            mode = "finite_difference" if n <= FINITE_DIFFERENCE_MAX else "autograd"
        if mode == "autograd":
            try:
                with torch.no_grad():
                    J = torch.func.jacfwd(lambda z: field(t, z, 1))(y)
                self.counts["autograd_jacobian_columns"] += n
                return J
            except Exception as err:  # noqa: BLE001 — any failure of vmap/forward-AD on the user's f
                # Under "auto" differences are the documented alternative (an adjoint's dynamics,
                # which call autograd inside, always land here): counted, not warned about.
                self.counts["jacobian_fallbacks"] += 1
                if self.jacobian_mode == "autograd" and not self._warned_fallback:
                    warnings.warn(f"method {self.name!r}: autograd's forward-mode Jacobian of f failed "
                                  f"({type(err).__name__}: {err}); using finite differences instead "
                                  "(options={'jacobian': 'finite_difference'} avoids this attempt)", stacklevel=6)
                    self._warned_fallback = True
                self.jacobian_mode = "finite_difference"
        with torch.no_grad():
            f0 = field(t, y, 1)
            eps = math.sqrt(torch.finfo(y.dtype).eps)
            steps = eps * torch.maximum(y.abs(), torch.ones_like(y))
            columns = []
            for j in range(n):
                z = y.clone()
                z[j] += steps[j]
                columns.append((field(t, z, 1) - f0) / (z[j] - y[j]))
        return torch.stack(columns, dim=1)

    def _newton(self, field, t1: float, predicted: torch.Tensor, psi: torch.Tensor, c: float,
                scale: torch.Tensor, linear: Linearisation, t0: float, y0: torch.Tensor
                ) -> tuple[bool, torch.Tensor, torch.Tensor, int]:
        """Solve ``d − c f(t1, y_p + d) + ψ = 0``; returns (converged, d, y, iterations), iterations
        −1 when an iterate or ``f`` went non-finite."""
        dense = self._uses_dense(predicted)
        if dense:
            if linear.jacobian is None:
                self._refresh(field, t0, y0, linear)
            if linear.lu is None or linear.c != c:
                self.counts["lu_factorizations"] += 1
                try:
                    linear.lu = factorize(linear.jacobian, linear.sparse, c)
                except SingularMatrixError:
                    self.counts["singular_matrices"] += 1
                    linear.lu = None
                    return False, predicted, predicted, 0  # a shorter step changes c
                linear.c = c
        d = torch.zeros_like(predicted)
        y = predicted
        previous = None
        converged = False
        k = 0
        for k in range(NEWTON_MAX_ITERS):
            fy = field(t1, y, -1)
            self.counts["newton_iterations"] += 1
            rhs = c * fy - psi - d
            if dense:
                dy = linear.lu.solve(rhs)
            else:
                dy = self._krylov_solve(field, t1, y, fy, c, rhs)
            dy_norm = self._rms(dy.detach() / scale)  # NaN/inf when f was not finite: no convergence
            if not math.isfinite(dy_norm):
                return False, d, y, -1
            rate = None if previous is None or previous == 0 else dy_norm / previous
            if rate is not None and (rate >= 1 or rate ** (NEWTON_MAX_ITERS - k) / (1 - rate) * dy_norm
                                     > self.newton_tol):
                break  # diverging, or too slow to converge within the remaining iterations
            y = y + dy
            d = d + dy
            if dy_norm == 0 or (rate is not None and rate / (1 - rate) * dy_norm < self.newton_tol):
                converged = True
                break
            previous = dy_norm
        return converged, d, y, k + 1

    def _krylov_solve(self, field, t: float, y: torch.Tensor, fy: torch.Tensor, c: float,
                      rhs: torch.Tensor) -> torch.Tensor:
        """``(I − c J(y)) δ = rhs`` by GMRES on finite-difference products ``J v ≈ (f(y + εv) − f(y))/ε``."""
        y_ = y.detach()
        f_ = fy.detach()

        def matvec(v: torch.Tensor) -> torch.Tensor:
            self.counts["jvps"] += 1
            eps = difference_increment(y_, v)
            if eps is None:
                return v
            return v - c * (field(t, y_ + eps * v, -1) - f_) / eps

        # Under backprop GMRES is recorded (it is out of place): the products are linear in v.
        if self.preconditioner is None:
            return gmres(matvec, rhs, self.krylov_rtol, self.krylov_dim)
        # Right preconditioning: solve (A M) u = rhs, then δ = M u; the residual stays rhs − A δ.
        apply = self.preconditioner(t, y_, c)
        return apply(gmres(lambda u: matvec(apply(u)), rhs, self.krylov_rtol, self.krylov_dim))


def _preconditioner_option(value: Any) -> Preconditioner | None:
    if value is not None and not callable(value):
        raise InvalidInputError(
            "option preconditioner must be a callable (t, y, c) -> (v -> M v) with M ≈ (I - c ∂f/∂y)⁻¹, "
            f"got {value!r}")
    return value


def make_bdf(name: str, kappa: tuple[float, ...]):
    """The builder of method ``name`` for :class:`~odekit.solve.methods.Method`."""

    def build(options: dict[str, Any], rtol: Tolerance, atol: Tolerance) -> BDF:
        return BDF(
            name, kappa, rtol, atol,
            max_order=number_option("max_order", options.get("max_order", MAX_ORDER), ge=1, le=MAX_ORDER,
                                    integer=True),
            jacobian=choice_option("jacobian", options.get("jacobian", JACOBIANS[0]), JACOBIANS),
            linear_solver=choice_option("linear_solver", options.get("linear_solver", "auto"), LINEAR_SOLVERS),
            dense_max=number_option("dense_max", options.get("dense_max", DEFAULT_DENSE_MAX), ge=1, integer=True),
            krylov_dim=number_option("krylov_dim", options.get("krylov_dim", 30), ge=1, integer=True),
            krylov_rtol=number_option("krylov_rtol", options.get("krylov_rtol", 0.1), gt=0, lt=1),
            preconditioner=_preconditioner_option(options.get("preconditioner")),
            stage_gradient=StageGradient.from_options(options),
        )

    return build


BDF_METHODS = (
    Method("ndf", make_bdf("ndf", NDF_KAPPA), adaptive=True, options=BDF_OPTIONS, proposes_steps=True,
           adjoint_trajectory="interpolate",
           description="stiff: variable-order NDF 1–5 (Shampine's, as scipy's BDF / ode15s), modified Newton"),
    Method("bdf", make_bdf("bdf", (0.0,) * (MAX_ORDER + 1)), adaptive=True, options=BDF_OPTIONS,
           proposes_steps=True, adjoint_trajectory="interpolate",
           description="stiff: variable-order BDF 1–5, modified Newton"),
)
