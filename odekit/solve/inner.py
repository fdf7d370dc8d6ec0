"""Inner solvers of the proximal implicit schemes (thesis §5.2.1.1).

Every implicit stage of chapter 5 asks for the minimiser of the proximal objective

    G(z) = ‖z − p‖² / (2σ) + F(z),   f = −∇F            (eqs. 5.5–5.6)

whose stationarity condition is the implicit equation

    r(z) = z − p − σ f(t, z) = 0                         (eq. 5.4 with σ = h, p = y_n).

``r`` is σ·∇G, and it exists whether or not ``f`` has a potential ``F`` (Remark 6), so every
method here works on ``r`` alone and the inner step ``η`` is dimensionless: ``η = 1`` is the
plain fixed-point (Picard) iteration ``z ← p + σ f(z)``, smaller ``η`` is gradient descent on
``G`` with step ``ησ`` (eq. 5.7). The methods are generators of iterates; :class:`InnerSolver`
runs one of them under the stopping rule (‖z_{i+1} − z_i‖ ≤ tol, or ‖r‖ ≤ res_tol, or an
iteration cap; RMS norms), watches for divergence and halves ``η`` when it sees it.

Each call of ``f`` — a residual, or a Jacobian–vector product — is one evaluation, counted by
the engine's :class:`~odekit.solve.field.VectorField`.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.autograd.forward_ad as fwAD

from .errors import InvalidInputError, choice_option, did_you_mean, number_option
from .norms import rms_norm

Field = Callable[[float, torch.Tensor], torch.Tensor]
Iterates = Iterator[tuple[torch.Tensor, torch.Tensor]]

JVP_MODES = ("finite_difference", "forward_ad")
DEFAULT_INNER = "lbfgs"


@dataclass
class ProximalProblem:
    """One implicit stage: find ``z`` with ``r(z) = z − center − σ f(t, z) = 0``.

    An inner method needs only :meth:`residual` and :meth:`jvp`; any problem with those two (the
    coupled stages of an implicit Runge–Kutta method, for instance) runs through the same
    :class:`InnerSolver`. ``side`` is passed to the field (``-1``: a stage at the step's end).
    """

    field: Field
    t: float
    center: torch.Tensor
    sigma: float
    jvp_mode: str = "finite_difference"
    side: int = 0

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.center - self.sigma * self.field(self.t, z, self.side)

    def fixed_point_map(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z) = center + σ f(t, z)``, whose fixed point is the stage (``r = z − G(z)``)."""
        return self.center + self.sigma * self.field(self.t, z, self.side)

    def jvp(self, z: torch.Tensor, v: torch.Tensor, r_z: torch.Tensor) -> torch.Tensor:
        """``(∂r/∂z) v = v − σ (∂f/∂z) v``, one evaluation of ``f``.

        ``finite_difference`` (default) differences ``r`` along ``v`` with the usual
        ``√ε (1 + ‖z‖)/‖v‖`` increment: the classical Jacobian-free Newton–Krylov product, accurate
        to about ``√ε`` relative, which inexact Newton tolerates. ``forward_ad`` is exact, through
        PyTorch's forward-mode autograd, but on CPU it measured 8–25× slower per product than an
        evaluation of ``f`` (docs/benchmarks.md).
        """
        if self.jvp_mode == "finite_difference":
            eps = difference_increment(z, v)
            if eps is None:
                return torch.zeros_like(v)
            return (self.residual(z + eps * v) - r_z) / eps
        tangent = forward_tangent(self.field, self.t, z, v, self.side)
        return v if tangent is None else v - self.sigma * tangent


def difference_increment(z: torch.Tensor, v: torch.Tensor) -> float | None:
    """The increment ``√ε (1 + ‖z‖)/‖v‖`` of a finite-difference product along ``v`` (``None`` if ``v = 0``)."""
    v_norm = float(torch.linalg.vector_norm(v.detach()))
    if v_norm == 0.0:
        return None
    return math.sqrt(torch.finfo(z.real.dtype).eps) * (1.0 + float(torch.linalg.vector_norm(z.detach()))) / v_norm


def forward_tangent(field: Field, t: float, z: torch.Tensor, v: torch.Tensor, side: int) -> torch.Tensor | None:
    """``(∂f/∂z)(t, z) v`` by forward-mode autograd (``None`` when ``f`` does not depend on ``z``)."""
    with fwAD.dual_level():
        return fwAD.unpack_dual(field(t, fwAD.make_dual(z, v), side)).tangent


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a, b)


def gradient_descent(problem: ProximalProblem, z: torch.Tensor, step: float) -> Iterates:
    """``z ← z − η r(z)`` (eq. 5.7); with ``η = 1`` the fixed-point iteration of Remark 6."""
    while True:
        r = problem.residual(z)
        z_next = z - step * r
        yield z_next, r
        z = z_next


def nesterov(problem: ProximalProblem, z: torch.Tensor, step: float, restart: bool) -> Iterates:
    """Nesterov's accelerated gradient (momentum ``k/(k+3)``).

    With ``restart`` the momentum is reset whenever it points uphill, ``⟨r(v), z_{k+1} − z_k⟩ > 0``
    (the gradient restart of O'Donoghue & Candès, 2015).
    """
    z_prev, k = z, 0
    while True:
        v = z if k == 0 else z + (k / (k + 3)) * (z - z_prev)
        r = problem.residual(v)
        z_next = v - step * r
        k = 0 if restart and float(_dot(r.detach(), (z_next - z).detach())) > 0 else k + 1
        yield z_next, r
        z_prev, z = z, z_next


def fletcher_reeves(problem: ProximalProblem, z: torch.Tensor, step: float) -> Iterates:
    """Gradient descent with Fletcher–Reeves momentum (eqs. 5.8–5.9).

    ``p_i = r_i + β_i p_{i−1}``, ``z ← z − η p_i``, ``β_i = ‖r_i‖² / ‖r_{i−1}‖²`` capped just
    below 1 (as the authors' code does) so the momentum cannot grow without bound.
    """
    p = rr_prev = None
    while True:
        r = problem.residual(z)
        rr = _dot(r, r)
        if p is None:
            p = r
        else:
            beta = (rr / rr_prev.clamp_min(torch.finfo(rr.dtype).tiny)).clamp(max=1 - 1e-6)
            p = r + beta * p
        z_next = z - step * p
        yield z_next, r
        z, rr_prev = z_next, rr


def lbfgs(problem: ProximalProblem, z: torch.Tensor, step: float, memory: int) -> Iterates:
    """Limited-memory BFGS on ``r`` as the gradient, unit steps after the first.

    The first step is ``η r``; later directions come from the two-loop recursion over the last
    ``memory`` pairs ``(s, y) = (Δz, Δr)`` with the usual ``sᵀy / yᵀy`` initial scaling. Pairs
    with ``sᵀy ≤ 0`` (no positive curvature) are skipped. Without a potential there is no line
    search; the divergence guard of :class:`InnerSolver` catches a bad direction.
    """
    pairs: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = deque(maxlen=memory)
    r = problem.residual(z)
    while True:
        if pairs:
            q = r
            alphas = []
            for s, y, rho in reversed(pairs):
                a = rho * _dot(s, q)
                q = q - a * y
                alphas.append(a)
            s, y, _ = pairs[-1]
            q = q * (_dot(s, y) / _dot(y, y))
            for (s, y, rho), a in zip(pairs, reversed(alphas)):
                q = q + (a - rho * _dot(y, q)) * s
            direction = q
        else:
            direction = step * r
        z_next = z - direction
        r_next = problem.residual(z_next)
        s, y = z_next - z, r_next - r
        sy = _dot(s, y)
        if float(sy.detach()) > 1e-12 * float(_dot(s, s).detach()):
            pairs.append((s, y, 1.0 / sy))
        yield z_next, r
        z, r = z_next, r_next


def anderson(problem: ProximalProblem, z: torch.Tensor, step: float, memory: int) -> Iterates:
    """Anderson acceleration (type II, Walker & Ni 2011) of the damped fixed-point map ``z − η r(z)``.

    The thesis names it as future work (Remark 6, §5.6). Each iterate mixes the last
    ``memory + 1`` map values with the weights that minimise the mixed fixed-point residual.
    """
    maps: deque[torch.Tensor] = deque(maxlen=memory + 1)
    gaps: deque[torch.Tensor] = deque(maxlen=memory + 1)
    while True:
        r = problem.residual(z)
        gap = -step * r  # g(z) − z
        maps.append(z + gap)
        gaps.append(gap)
        if len(gaps) == 1:
            z_next = maps[-1]
        else:
            d_gaps = torch.stack([b - a for a, b in zip(list(gaps)[:-1], list(gaps)[1:])], dim=1)
            d_maps = torch.stack([b - a for a, b in zip(list(maps)[:-1], list(maps)[1:])], dim=1)
            gram = d_gaps.T @ d_gaps
            ridge = 1e-10 * gram.diagonal().sum() + torch.finfo(gram.dtype).tiny
            gamma = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device),
                                       d_gaps.T @ gap)
            z_next = maps[-1] - d_maps @ gamma
        yield z_next, r
        z = z_next


def gmres(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, rtol: float, max_dim: int) -> torch.Tensor:
    """Solve ``A x = b`` by GMRES from ``x = 0`` (no restart).

    Arnoldi with classical Gram–Schmidt applied twice (one matrix product per pass); Givens
    rotations on a detached copy of the Hessenberg matrix track the residual, so the stopping
    test costs no solve. Stops when the residual is ≤ ``rtol ‖b‖`` or after ``max_dim``
    products; the small least-squares problem is then solved once by QR. Out of place, so
    backprop can differentiate it.
    """
    beta = torch.linalg.vector_norm(b)
    beta_value = float(beta.detach())
    if beta_value == 0.0:
        return torch.zeros_like(b)
    basis = [b / beta]
    columns: list[torch.Tensor] = []
    rotations: list[tuple[float, float]] = []
    g = [beta_value]  # rotated right-hand side; |g[-1]| is the residual norm
    for k in range(max_dim):
        w = matvec(basis[k])
        V = torch.stack(basis, dim=1)
        c1 = V.T @ w
        w = w - V @ c1
        c2 = V.T @ w
        w = w - V @ c2
        norm_w = torch.linalg.vector_norm(w)
        columns.append(torch.cat([c1 + c2, norm_w.reshape(1)]))
        col = columns[-1].detach().tolist()
        for i, (cs, sn) in enumerate(rotations):
            col[i], col[i + 1] = cs * col[i] + sn * col[i + 1], -sn * col[i] + cs * col[i + 1]
        radius = (col[k] ** 2 + col[k + 1] ** 2) ** 0.5
        cs, sn = (1.0, 0.0) if radius == 0.0 else (col[k] / radius, col[k + 1] / radius)
        rotations.append((cs, sn))
        g.append(-sn * g[k])
        g[k] = cs * g[k]
        if abs(g[-1]) <= rtol * beta_value or col[k + 1] <= 1e-14 * beta_value:
            break
        basis.append(w / norm_w)
    m = len(columns)
    hess = torch.stack([torch.nn.functional.pad(c, (0, m + 1 - len(c))) for c in columns], dim=1)
    rhs = torch.cat([beta.reshape(1), b.new_zeros(m)])
    q, upper = torch.linalg.qr(hess)
    y = torch.linalg.solve_triangular(upper, (q.T @ rhs)[:, None], upper=True)[:, 0]
    return torch.stack(basis[:m], dim=1) @ y


# How a converged stage's gradient is taken: backprop through the inner iterations ("unrolled", the
# authors' choice for GRAND), or the implicit function theorem on the converged stage ("implicit",
# ``solve(..., gradient="implicit")``). The options every implicit solver takes for it:
STAGE_GRADIENTS = ("unrolled", "implicit")
STAGE_GRADIENT_OPTIONS = ("stage_gradient", "implicit_rtol")


class FixedPointStage(Protocol):
    """An implicit stage as a fixed point ``z = G(z)``: :class:`ProximalProblem`, or the coupled
    stages of an implicit Runge–Kutta step."""

    def fixed_point_map(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass
class StageGradient:
    """How the implicit solvers differentiate their stages (options ``stage_gradient``, ``implicit_rtol``).

    ``"implicit"``: the stage is solved without a graph (:meth:`applies` says when, :meth:`without_graph`
    runs it) and :meth:`attach` gives the converged value the gradient of the implicit function
    theorem, so memory does not grow with the inner (Newton, Fletcher–Reeves, …) iterations.
    One instance per solve: it counts what :meth:`report` writes into the solve's stats —
    the evaluations made without a graph (which backprop does not differentiate, so they are not
    backward NFE) and, during the backward pass, each GMRES product as one backward evaluation
    (a vector–Jacobian product of ``f``, as the adjoint counts them).
    """

    mode: str = "unrolled"
    rtol: float | None = None  # GMRES tolerance relative to the incoming gradient; None: max(1e-10, 10 ε)
    max_dim: int = 200  # GMRES products per adjoint solve at most
    without_graph_nfe: int = 0
    _stats: SolveStatsLike | None = None

    @classmethod
    def from_options(cls, options: dict) -> StageGradient:
        mode = choice_option("stage_gradient", options.get("stage_gradient", "unrolled"), STAGE_GRADIENTS)
        rtol = options.get("implicit_rtol")
        return cls(mode, None if rtol is None else number_option("implicit_rtol", rtol, gt=0, lt=1))

    def applies(self) -> bool:
        """Whether this stage solve runs without a graph (implicit mode, and a gradient wanted)."""
        return self.mode == "implicit" and torch.is_grad_enabled()

    @contextlib.contextmanager
    def without_graph(self, field) -> Iterator[None]:
        """Run a stage solve under ``no_grad``, counting ``field``'s evaluations in it."""
        before = field.nfe
        with torch.no_grad():
            yield
        self.without_graph_nfe += field.nfe - before

    def attach(self, stage: FixedPointStage, z_star: torch.Tensor) -> torch.Tensor:
        """``z*`` with the implicit gradient (:func:`implicit_stage`)."""
        rtol = self.rtol if self.rtol is not None else max(1e-10, 10 * torch.finfo(z_star.dtype).eps)
        return implicit_stage(stage, z_star, rtol, self.max_dim, self._count_product)

    def report(self, stats: SolveStatsLike) -> None:
        """Write the counts into the solve's stats; the backward products are added as they happen."""
        if self.mode != "implicit":
            return
        if self.without_graph_nfe:
            stats.extra["nfe_without_graph"] = stats.extra.get("nfe_without_graph", 0) + self.without_graph_nfe
            self.without_graph_nfe = 0
        self._stats = stats

    def _count_product(self) -> None:
        if self._stats is not None:
            self._stats.nfe_backward += 1


class SolveStatsLike(Protocol):
    extra: dict
    nfe_backward: int


def implicit_stage(stage: FixedPointStage, z_star: torch.Tensor, rtol: float, max_dim: int,
                   on_product: Callable[[], None] | None = None) -> torch.Tensor:
    """The converged stage ``z*`` with the gradient of the implicit function theorem attached.

    ``z*`` solves ``z = G(z)`` (a proximal stage: ``G(z) = center + σ f(t, z)``; coupled implicit
    RK stages: ``G(W) = h (A ⊗ I) F(y0 + W)``). Differentiating that equation instead of the
    iterations that found it: for an incoming gradient ``g``, ``λ`` solves the linear adjoint system
    ``(I − ∂G/∂z)ᵀ λ = g`` (for a proximal stage ``(I − σ ∂f/∂z)ᵀ λ = g``; GMRES on
    vector–Jacobian products, to ``rtol``; ``on_product`` is told of each), and ``λ`` is then
    backpropagated through one evaluation of ``G`` into everything it depends on (the stage's
    centre, ``f``'s parameters). Memory holds one evaluation of ``G`` per stage, however many
    inner iterations the forward solve took (the thesis's closing idea: the adjoint of an
    optimisation problem is an optimisation problem).
    """
    z0 = z_star.detach().requires_grad_(True)
    # z0 is only the point of the products below: drop the gradient the backward leaves on it
    z0.register_post_accumulate_grad_hook(lambda leaf: setattr(leaf, "grad", None))
    with torch.enable_grad():
        mapped = stage.fixed_point_map(z0)
    if not mapped.requires_grad:
        return z_star.detach()

    def transposed(v: torch.Tensor) -> torch.Tensor:
        if on_product is not None:
            on_product()
        (vjp,) = torch.autograd.grad(mapped, z0, v, retain_graph=True, allow_unused=True)
        return v if vjp is None else v - vjp

    # The hook sits on a view: the products above start from ``mapped`` and must not re-enter it.
    hooked = mapped.view_as(mapped)
    hooked.register_hook(lambda g: gmres(transposed, g, rtol, max_dim))
    # the value is the converged z*; only the gradient goes through ``mapped``
    return hooked + (z_star.detach() - mapped).detach()


def newton_krylov(problem: ProximalProblem, z: torch.Tensor, krylov_rtol: float, krylov_dim: int) -> Iterates:
    """Jacobian-free Newton–Krylov: each Newton correction solves ``(∂r/∂z) δ = −r`` by GMRES.

    The Jacobian is never formed; each GMRES iteration costs one Jacobian–vector product.
    """
    while True:
        r = problem.residual(z)
        delta = gmres(lambda v, z=z, r=r: problem.jvp(z, v, r), -r, krylov_rtol, krylov_dim)
        z_next = z + delta
        yield z_next, r
        z = z_next


def newton(problem: ProximalProblem, z: torch.Tensor) -> Iterates:
    """Newton–Raphson with the dense Jacobian (``n`` Jacobian–vector products per iteration).

    The reference of Fig 5.5: exact and quadratically convergent, but ``O(n)`` evaluations
    and an ``O(n³)`` solve per iteration.
    """
    n = z.numel()
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    while True:
        r = problem.residual(z)
        jacobian = torch.stack([problem.jvp(z, eye[i], r) for i in range(n)], dim=1)
        z_next = z - torch.linalg.solve(jacobian, r)
        yield z_next, r
        z = z_next


@dataclass(frozen=True)
class InnerMethod:
    """A named inner method: its iterate generator and the settings it reads."""

    name: str
    iterate: Callable[..., Iterates]
    settings: tuple[str, ...]
    description: str
    default_step: float | None = None  # methods with an inner step η


INNER_METHODS: dict[str, InnerMethod] = {
    m.name: m
    for m in (
        InnerMethod("gd", gradient_descent, ("step",), "gradient descent on the proximal objective (eq. 5.7)", 0.5),
        InnerMethod("fixed_point", gradient_descent, ("step",), "fixed-point (Picard) iteration z ← p + σf(z)", 1.0),
        InnerMethod("nesterov", lambda p, z, step: nesterov(p, z, step, restart=False), ("step",),
                    "Nesterov accelerated gradient", 0.5),
        InnerMethod("nesterov_restart", lambda p, z, step: nesterov(p, z, step, restart=True), ("step",),
                    "Nesterov with gradient-based adaptive restart", 0.5),
        InnerMethod("fr", fletcher_reeves, ("step",), "gradient descent with Fletcher–Reeves momentum (eqs. 5.8–5.9)",
                    0.5),
        InnerMethod("lbfgs", lbfgs, ("step", "memory"), "L-BFGS on the residual, unit steps", 0.5),
        InnerMethod("anderson", anderson, ("step", "memory"), "Anderson acceleration of the damped fixed point", 0.5),
        InnerMethod("newton_krylov", newton_krylov, ("krylov_rtol", "krylov_dim"),
                    "Jacobian-free Newton–Krylov (GMRES on Jacobian–vector products)"),
        InnerMethod("newton", newton, (), "Newton–Raphson with the dense Jacobian (small systems)"),
    )
}


@dataclass
class InnerResult:
    z: torch.Tensor
    iterations: int
    converged: bool
    residual_norm: float


@dataclass
class InnerSolver:
    """Runs one inner method under the stopping rule, with a divergence guard.

    Stops when ‖r(z_i)‖ ≤ ``res_tol`` or ‖z_{i+1} − z_i‖ ≤ ``tol`` (RMS norms), or after
    ``max_iters`` updates without either (not converged). The thesis stops on the step alone;
    here that rule is off by default (``tol = 0``) because a slowly progressing solver takes
    small steps long before it has converged: on the heat equation (N = 128, backward Euler,
    h = 0.1) stopping at steps ≤ 1e-6 leaves a final error of 9e-4, the residual rule 6e-8. If the residual grows
    past ``1e3`` times its start or turns non-finite, a method with a step ``η`` restarts from the
    initial guess with ``η/2``, and keeps the smaller ``η`` for later solves.
    """

    method: str = DEFAULT_INNER
    step: float | None = None
    tol: float = 0.0
    res_tol: float = 1e-6
    max_iters: int = 1000
    memory: int = 5
    krylov_rtol: float = 1e-2
    krylov_dim: int = 100
    step_reductions: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in INNER_METHODS:
            raise InvalidInputError(
                f"unknown inner solver {self.method!r}{did_you_mean(str(self.method), INNER_METHODS)}; "
                f"choose one of {', '.join(INNER_METHODS)}"
            )
        spec = INNER_METHODS[self.method]
        # Checked under the names of the options that set them (proximal methods' inner_* options).
        self.tol = number_option("inner_tol", self.tol, ge=0)
        self.res_tol = number_option("inner_res_tol", self.res_tol, ge=0)
        self.max_iters = number_option("inner_max_iters", self.max_iters, ge=1, integer=True)
        self.memory = number_option("inner_memory", self.memory, ge=1, integer=True)
        self.krylov_rtol = number_option("krylov_rtol", self.krylov_rtol, gt=0, lt=1)
        self.krylov_dim = number_option("krylov_dim", self.krylov_dim, ge=1, integer=True)
        if spec.default_step is not None:
            self.step = number_option("inner_step", spec.default_step if self.step is None else self.step, gt=0)
        self._spec = spec

    def _iterates(self, problem: ProximalProblem, z0: torch.Tensor) -> Iterates:
        kwargs = {"step": self.step, "memory": self.memory, "krylov_rtol": self.krylov_rtol,
                  "krylov_dim": self.krylov_dim}
        return self._spec.iterate(problem, z0, **{k: kwargs[k] for k in self._spec.settings})

    def __call__(
        self,
        problem: ProximalProblem,
        z0: torch.Tensor,
        callback: Callable[[int, torch.Tensor, float], None] | None = None,
        *,
        res_tol: float | None = None,
        tol: float | None = None,
    ) -> InnerResult:
        """Solve ``problem`` from ``z0``; ``callback(i, z_i, ‖z_i − z_{i−1}‖)`` sees every iterate.

        ``res_tol`` and ``tol`` override the solver's tolerances for this call only (a caller whose
        tolerance follows the scale of the state, like the implicit Runge–Kutta stages).
        """
        res_tol = self.res_tol if res_tol is None else res_tol
        tol = self.tol if tol is None else tol
        iterations = 0
        while True:
            z, r0_norm = z0, None
            for z_next, r in self._iterates(problem, z0):
                iterations += 1
                r_norm = float(rms_norm(r.detach()))
                if r0_norm is None:
                    r0_norm = r_norm
                if not math.isfinite(r_norm) or r_norm > 1e3 * max(r0_norm, res_tol):
                    break  # diverging
                # The step's norm costs a reduction and a device sync: only when someone reads it.
                watch_steps = tol > 0 or callback is not None
                step_norm = float(rms_norm((z_next - z).detach())) if watch_steps else math.inf
                if callback is not None:
                    callback(iterations, z_next, step_norm)
                z = z_next
                if r_norm <= res_tol or step_norm <= tol:
                    return InnerResult(z, iterations, True, r_norm)
                if iterations >= self.max_iters:
                    return InnerResult(z, iterations, False, r_norm)
            # diverged: retry from the warm start with half the step, if the method has one
            if self._spec.default_step is None or iterations >= self.max_iters or self.step_reductions >= 40:
                return InnerResult(z0, iterations, False, r_norm)
            self.step /= 2
            self.step_reductions += 1
