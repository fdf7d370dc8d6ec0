"""The time-stepping loop shared by every solver and controller.

A *solver* takes one step (:class:`~odekit.solve.runge_kutta.RungeKutta`, and the proximal
implicit schemes of chapter 5, :class:`~odekit.solve.proximal.ProximalSolver`, through the same
methods); a *controller* decides the step sizes. A solver carries a *state* from one accepted
step to the next (diffrax's ``solver_state``): the first stage of an FSAL tableau, the past
points of a multistep scheme. A rejected step is retried from the same state. This loop walks
from the first to the last output time, asks the solver for dense output at each requested
time, counts steps and enforces the caps. States here are flat vectors.

Beyond that it handles what belongs to no single solver: step callbacks, breakpoints the steps
must land on (``step_t``, and ``jump_t`` where ``f`` is discontinuous, after which the solver
restarts from a fresh evaluation on the far side), cubic Hermite output on fixed grids, a
terminal event located by bisection on the dense output, and a record of every step for dense
output over the whole interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .errors import InvalidInputError, MaxStepsExceededError, NonFiniteError, StepSizeUnderflowError
from .field import VectorField
from .solution import SolveStats


class Solver(Protocol):
    """One step of a method. ``field(t, y, side)`` evaluates ``f``; ``side`` is ``+1`` for the
    evaluation at a step's start, ``-1`` at its end, ``0`` inside (see :class:`VectorField`)."""

    name: str
    order: int
    error_order: int  # the local error estimate scales as h**error_order (sets the controller's exponent)
    adaptive: bool
    fsal: bool  # needs f(t0, y0) at the start (the loop evaluates it once and hands it to init)

    def init(self, t0: float, y0: torch.Tensor, f0: torch.Tensor | None) -> Any: ...

    def step(self, field, t0: float, y0: torch.Tensor, h: float, state: Any) -> tuple[torch.Tensor, Any]:
        """Returns ``(y1, K)``; ``K`` is whatever ``error``/``interpolate``/``accepted`` need."""

    def error(self, K: Any) -> torch.Tensor | None:
        """Local error estimate divided by ``h``; ``None`` rejects the step outright."""

    def interpolate(self, y0: torch.Tensor, K: Any, h: float, theta: torch.Tensor) -> torch.Tensor: ...

    def accepted(self, state: Any, K: Any) -> Any:
        """The state after the step that produced ``K`` was accepted."""

    def record(self, stats: SolveStats) -> str | None:
        """Add the solver's own counters to ``stats`` (called once, when the loop ends).

        Returns a message if the result is degraded (implicit stages of a fixed step that stopped
        unconverged), which makes the solve's status ``inner_not_converged``; else ``None``.
        """

    def start_slope(self, K: Any) -> torch.Tensor | None:
        """``f(t0, y0)`` of the step that produced ``K`` if the step computed it, else ``None``."""


@dataclass
class LoopHooks:
    """Callbacks on flat states: ``step(t0, y0, h)`` before every attempted step, then
    ``accept`` or ``reject`` with the same arguments (torchdiffeq's ``callback_*``)."""

    step: Callable[[float, torch.Tensor, float], None] | None = None
    accept: Callable[[float, torch.Tensor, float], None] | None = None
    reject: Callable[[float, torch.Tensor, float], None] | None = None


@dataclass
class Event:
    """A terminal event: the solve stops where ``fn(t, y)`` (on flat states) first becomes ≤ 0.

    ``fn`` is positive at the start (the caller combines several event functions into one, see
    :func:`odekit.solve.events.combine`); the crossing is located to ``tol`` in time.
    """

    fn: Callable[[float, torch.Tensor], float]
    tol: float


@dataclass
class StepRecord:
    """One accepted step as the loop took it, enough to take it again (checkpointed gradients).

    ``outputs`` are the ``(row, θ)`` of the output times inside the step; ``restart`` says the
    loop restarted the solver from ``f`` at the step's end (a ``jump_t`` point).
    """

    t: float
    h: float
    t_next: float
    outputs: list[tuple[int, float]]
    restart: bool = False


class Breakpoints:
    """Times the steps must end on: ``step_t`` (just land there) and ``jump_t`` (``f`` jumps there).

    Only points strictly beyond the start in the direction of integration matter.
    """

    def __init__(self, step_t: Sequence[float], jump_t: Sequence[float], t0: float, direction: float) -> None:
        common = set(step_t) & set(jump_t)
        if common:
            raise InvalidInputError(f"step_t and jump_t must not share points; both contain {sorted(common)}")
        points = [(p, False) for p in step_t] + [(p, True) for p in jump_t]
        self.points = sorted((pt for pt in points if direction * (pt[0] - t0) > 0), key=lambda pt: direction * pt[0])
        self.direction = direction
        self.index = 0

    def clip(self, t: float, h: float) -> tuple[float, tuple[float, bool] | None]:
        """The step from ``t`` shortened to end on the next point if it would pass it."""
        while self.index < len(self.points) and self.direction * (self.points[self.index][0] - t) <= 0:
            self.index += 1
        if self.index < len(self.points):
            point = self.points[self.index]
            if self.direction * (point[0] - (t + h)) <= 0:  # landing exactly on it counts too
                return point[0] - t, point
        return h, None


def linear_interpolation(y0: torch.Tensor, y1: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``y0 + θ (y1 − y0)`` for each ``θ`` in ``theta`` (shape m), as ``m × n``: fixed-grid dense output."""
    m = theta.numel()
    return torch.lerp(y0.expand(m, -1), y1.expand(m, -1), theta.to(y0.dtype)[:, None])


class StepInterpolant:
    """Dense output over one accepted step ``[t0, t0 + h]``: the solver's own, or cubic Hermite.

    The cubic form (fixed grids with ``interp="cubic"``) uses the slopes at both ends, the start
    slope from the step when the solver computed it, the end slope from one more evaluation.
    """

    __slots__ = ("K", "h", "slopes", "solver", "t0", "y0", "y1")

    def __init__(self, solver: Solver, field: VectorField, t0: float, h: float, y0: torch.Tensor,
                 y1: torch.Tensor, K: Any, cubic: bool) -> None:
        self.solver, self.t0, self.h, self.y0, self.y1, self.K = solver, t0, h, y0, y1, K
        self.slopes = None
        if cubic:
            f0 = solver.start_slope(K)
            self.slopes = (field(t0, y0, 1) if f0 is None else f0, field(t0 + h, y1, -1))

    @property
    def t1(self) -> float:
        return self.t0 + self.h

    def __call__(self, thetas: Sequence[float]) -> list[torch.Tensor]:
        """States at ``t0 + θh`` for each ``θ`` in ``(0, 1]``."""
        if len(thetas) == 1 and thetas[0] == 1.0:
            return [self.y1]
        y0 = self.y0
        theta = torch.tensor(list(thetas), dtype=y0.real.dtype, device=y0.device)
        if self.slopes is None:
            return list(self.solver.interpolate(y0, self.K, self.h, theta).unbind(0))
        f0, f1 = self.slopes
        s = theta[:, None]
        h00, h10 = (1 + 2 * s) * (1 - s) ** 2, s * (1 - s) ** 2
        h01, h11 = s**2 * (3 - 2 * s), s**2 * (s - 1)
        out = h00 * y0 + h01 * self.y1 + self.h * (h10 * f0 + h11 * f1)
        return list(out.unbind(0))


# Consecutive rejections caused by non-finite stages before we blame f rather than the step size.
_MAX_NON_FINITE_RETRIES = 12


def integrate(
    solver: Solver,
    controller,
    field: VectorField,
    y0: torch.Tensor,
    times: list[float],
    out: list[torch.Tensor],
    stats: SolveStats,
    *,
    max_steps: int,
    max_nfe: int,
    cubic: bool = False,
    hooks: LoopHooks | None = None,
    breakpoints: tuple[Sequence[float], Sequence[float]] | None = None,
    event: Event | None = None,
    steps: list[StepInterpolant] | None = None,
    trace: list[StepRecord] | None = None,
) -> float | None:
    """Append the state at each of ``times[1:]`` to ``out`` (``out`` already holds ``y0``).

    With ``event``, ``times`` only gives the start and the direction: the loop steps until the
    event and appends the state there; it returns the event time (else ``None``). ``steps``,
    when given, receives the interpolant of every accepted step, ``trace`` its
    :class:`StepRecord`. Raises the engine's errors;
    whatever was appended to ``out`` before a failure stays there.
    """
    n_out = len(times)
    if n_out < 2:
        return None
    direction = 1.0 if times[-1] > times[0] else -1.0
    field.direction = direction
    t, y = times[0], y0
    hooks = hooks or LoopHooks()
    marks = Breakpoints(*breakpoints, t, direction) if breakpoints else None
    if marks is not None and not controller.adaptive:
        raise InvalidInputError("step_t and jump_t apply to adaptive steps; on a fixed grid put the points in the grid")
    if event is not None:
        with torch.no_grad():
            at_start = event.fn(t, y)
        if at_start <= 0:  # the event holds at the start
            out.append(y)
            return t
    f0 = None
    nfe_start, steps_start = field.nfe, stats.steps
    if solver.fsal or controller.adaptive:
        f0 = field(t, y, 1)
        if not bool(torch.isfinite(f0).all()):
            raise NonFiniteError(f"f(t0, y0) at t0={t:.6g} is not finite (NaN or inf); check f and y0")
    h, control = controller.init(times, field=field, y0=y, f0=f0, order=solver.error_order)
    state = solver.init(t, y, f0)
    idx = 1
    non_finite_in_a_row = 0
    last_rejection_non_finite = False
    target = "the event" if event is not None else f"{times[-1]:.6g}"
    try:
        while idx < n_out:
            if stats.steps - steps_start >= max_steps:
                raise MaxStepsExceededError(
                    f"reached max_num_steps={max_steps} at t={t:.6g} (target {target}); raise the cap with "
                    f"options={{'max_num_steps': {10 * max_steps}}}, loosen rtol/atol, or use a stiff "
                    "method (method='auto' or 'ndf')"
                )
            if field.nfe - nfe_start > max_nfe:
                raise MaxStepsExceededError(
                    f"used {field.nfe - nfe_start} evaluations of f, more than max_nfe={max_nfe}, at "
                    f"t={t:.6g} (target {target}); raise the cap with options={{'max_nfe': {10 * max_nfe}}} "
                    "or loosen rtol/atol"
                )
            if abs(h) <= 8 * math.ulp(max(abs(t), abs(t + h))):
                if last_rejection_non_finite:
                    raise NonFiniteError(
                        f"f returns non-finite values (NaN or inf) just past t={t:.6g}: every step that "
                        "reaches beyond it fails, and the step size underflowed approaching it"
                    )
                raise StepSizeUnderflowError(
                    f"step size fell to {abs(h):.3g} at t={t:.6g}: the solution is probably blowing up or "
                    "the problem is stiff there; check f, loosen rtol/atol, or use a stiff method (method='auto' or "
                    "'ndf')"
                )
            h_step, mark = marks.clip(t, h) if marks is not None else (h, None)
            if mark is None and event is None and getattr(solver, "lands_on_end", False) \
                    and direction * (t + h_step - times[-1]) >= 0:
                # Multistep solvers end exactly on the last output time (as scipy's t_bound): their
                # interpolant, extrapolated back from beyond it, is far less accurate than the step.
                h_step, mark = times[-1] - t, (times[-1], False)
            t_next = controller.end(control, t, h_step) if mark is None else mark[0]
            if hooks.step is not None:
                hooks.step(t, y, h_step)
            y1, K = solver.step(field, t, y, h_step, state)
            non_finite = False
            if controller.adaptive:
                with torch.no_grad():
                    error = solver.error(K)
                    ratio = None if error is None else controller.error_ratio(error, y, y1, h_step)
                if ratio is None or not math.isfinite(ratio):
                    # The solver could not complete the step (an inner solve failed), or its stages
                    # went non-finite: retry shorter, and blame f if shrinking does not help.
                    non_finite = ratio is not None
                    non_finite_in_a_row += non_finite
                    if non_finite_in_a_row > _MAX_NON_FINITE_RETRIES:
                        raise NonFiniteError(
                            f"f returned non-finite values (NaN or inf) near t={t:.6g} even with the step "
                            f"shrunk to {abs(h_step):.3g}; the vector field diverges there"
                        )
                    accept = False
                    h_next, control = controller.retry(control, h_step)
                else:
                    non_finite_in_a_row = 0
                    accept, h_next, control = controller.adapt(control, h_step, ratio)
            else:
                accept, h_next, control = controller.adapt(control, h_step)
            if not accept:
                stats.steps_rejected += 1
                last_rejection_non_finite = non_finite
                h = h_next
                if hooks.reject is not None:
                    hooks.reject(t, y, h_step)
                continue
            if hooks.accept is not None:
                hooks.accept(t, y, h_step)
            stats.steps_accepted += 1
            interpolant = None
            if steps is not None:
                interpolant = StepInterpolant(solver, field, t, h_step, y, y1, K, cubic)
                steps.append(interpolant)
            if event is not None:
                if not controller.adaptive:
                    _check_finite(y1, t, t_next)
                with torch.no_grad():
                    value = event.fn(t_next, y1)
                if math.isnan(value):
                    raise NonFiniteError(f"the event function returned NaN at t={t_next:.6g}; check event_fn and f")
                if value <= 0:
                    interpolant = interpolant or StepInterpolant(solver, field, t, h_step, y, y1, K, cubic)
                    t_event, y_event = _locate(event, interpolant)
                    out.append(y_event)
                    return t_event
            else:
                stop = idx
                while stop < n_out and direction * (times[stop] - t_next) <= 0:
                    stop += 1
                thetas = [(times[i] - t) / h_step for i in range(idx, stop)]
                if trace is not None:
                    trace.append(StepRecord(t, h_step, t_next, list(zip(range(idx, stop), thetas))))
                if stop > idx:
                    if not controller.adaptive:
                        _check_finite(y1, t, t_next)
                    interpolant = interpolant or StepInterpolant(solver, field, t, h_step, y, y1, K, cubic)
                    out.extend(interpolant(thetas))
                    idx = stop
            t, y = t_next, y1
            state = solver.accepted(state, K)
            h = h_next
            # Past a discontinuity of f (a jump_t point, or with perturb any grid point): restart the
            # solver from the slope on the far side instead of reusing an end stage taken before it.
            if (mark is not None and mark[1]) or (field.perturb and solver.fsal and not controller.adaptive):
                f0 = field(t, y, 1) if solver.fsal or controller.adaptive else None
                state = solver.init(t, y, f0)
                if trace:
                    trace[-1].restart = True
        return None
    finally:
        stats.nfe += field.nfe - nfe_start


def _check_finite(y1: torch.Tensor, t0: float, t1: float) -> None:
    if not bool(torch.isfinite(y1).all()):
        raise NonFiniteError(
            f"the state became non-finite (NaN or inf) between t={t0:.6g} and t={t1:.6g}; "
            "the fixed step is too large for this problem or f diverges"
        )


def _locate(event: Event, interpolant: StepInterpolant) -> tuple[float, torch.Tensor]:
    """Bisect the step for the event's crossing, to ``event.tol`` in time.

    The event function is positive at the step's start and ≤ 0 at its end; the state at the
    returned time comes from the step's dense output (differentiable when the step is).
    """
    lo, hi = 0.0, 1.0
    iterations = max(1, math.ceil(math.log2(max(abs(interpolant.h) / event.tol, 2.0))))
    with torch.no_grad():
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if event.fn(interpolant.t0 + mid * interpolant.h, interpolant([mid])[0]) > 0:
                lo = mid
            else:
                hi = mid
    theta = 0.5 * (lo + hi)
    return interpolant.t0 + theta * interpolant.h, interpolant([theta])[0]
