"""The time-stepping loop shared by every solver and controller.

A *solver* takes one step (:class:`~odekit.solve.runge_kutta.RungeKutta`, and the proximal
implicit schemes of chapter 5, :class:`~odekit.solve.proximal.ProximalSolver`, through the same
methods); a *controller* decides the step sizes. A solver carries a *state* from one accepted
step to the next (diffrax's ``solver_state``): the first stage of an FSAL tableau, the past
points of a multistep scheme. A rejected step is retried from the same state. This loop walks
from the first to the last output time, asks the solver for dense output at each requested
time, counts steps and enforces the caps. States here are flat vectors.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from .errors import MaxStepsExceededError, NonFiniteError, StepSizeUnderflowError
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

    def record(self, stats: SolveStats) -> None:
        """Add the solver's own counters to ``stats`` (called once, when the loop ends)."""

    def start_slope(self, K: Any) -> torch.Tensor | None:
        """``f(t0, y0)`` of the step that produced ``K`` if the step computed it, else ``None``."""


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
) -> None:
    """Append the state at each of ``times[1:]`` to ``out`` (``out`` already holds ``y0``).

    Raises the engine's errors; whatever was appended to ``out`` before a failure stays there.
    """
    n_out = len(times)
    if n_out < 2:
        return
    direction = 1.0 if times[-1] > times[0] else -1.0
    t, y = times[0], y0
    f0 = None
    nfe_start, steps_start = field.nfe, stats.steps
    if solver.fsal or controller.adaptive:
        f0 = field(t, y)
        if not bool(torch.isfinite(f0).all()):
            raise NonFiniteError(f"f(t0, y0) at t0={t:.6g} is not finite (NaN or inf); check f and y0")
    h = controller.start(times, field=field, y0=y, f0=f0, order=solver.error_order)
    state = solver.init(t, y, f0)
    idx = 1
    non_finite_in_a_row = 0
    last_rejection_non_finite = False
    try:
        while idx < n_out:
            if stats.steps - steps_start >= max_steps:
                raise MaxStepsExceededError(
                    f"reached max_steps={max_steps} at t={t:.6g} (target {times[-1]:.6g}); raise "
                    "options['max_num_steps'], loosen rtol/atol, or use a stiff (proximal) method"
                )
            if field.nfe - nfe_start > max_nfe:
                raise MaxStepsExceededError(
                    f"used {field.nfe - nfe_start} evaluations of f, more than max_nfe={max_nfe}, at "
                    f"t={t:.6g} (target {times[-1]:.6g}); raise options['max_nfe'] or loosen rtol/atol"
                )
            if abs(h) <= 8 * math.ulp(max(abs(t), abs(t + h))):
                if last_rejection_non_finite:
                    raise NonFiniteError(
                        f"f returns non-finite values (NaN or inf) just past t={t:.6g}: every step that "
                        "reaches beyond it fails, and the step size underflowed approaching it"
                    )
                raise StepSizeUnderflowError(
                    f"step size fell to {abs(h):.3g} at t={t:.6g}: the solution is probably blowing up or "
                    "the problem is stiff there; check f, loosen rtol/atol, or use a proximal implicit method"
                )
            t_next = t + h
            y1, K = solver.step(field, t, y, h, state)
            if controller.adaptive:
                with torch.no_grad():
                    error = solver.error(K)
                    ratio = None if error is None else controller.error_ratio(error, y, y1, h)
                if ratio is None:  # the solver could not complete the step (an inner solve failed)
                    stats.steps_rejected += 1
                    last_rejection_non_finite = False
                    h *= controller.dfactor
                    continue
                if not math.isfinite(ratio):
                    non_finite_in_a_row += 1
                    if non_finite_in_a_row > _MAX_NON_FINITE_RETRIES:
                        raise NonFiniteError(
                            f"f returned non-finite values (NaN or inf) near t={t:.6g} even with the step "
                            f"shrunk to {abs(h):.3g}; the vector field diverges there"
                        )
                    stats.steps_rejected += 1
                    last_rejection_non_finite = True
                    h *= controller.dfactor
                    continue
                non_finite_in_a_row = 0
                accept, h_next = controller.adapt(h, ratio)
            else:
                accept, h_next = controller.adapt(h)
            if not accept:
                stats.steps_rejected += 1
                last_rejection_non_finite = False
                h = h_next
                continue
            stats.steps_accepted += 1
            stop = idx
            while stop < n_out and direction * (times[stop] - t_next) <= 0:
                stop += 1
            if stop > idx:
                _emit(solver, y, y1, K, h, t, times, idx, stop, out)
                if not controller.adaptive and not bool(torch.isfinite(y1).all()):
                    raise NonFiniteError(
                        f"the state became non-finite (NaN or inf) between t={t:.6g} and t={t_next:.6g}; "
                        "the fixed step is too large for this problem or f diverges"
                    )
                idx = stop
            t, y = t_next, y1
            state = solver.accepted(state, K)
            h = h_next
    finally:
        stats.nfe += field.nfe - nfe_start
        solver.record(stats)


def _emit(solver, y0, y1, K, h, t0, times, start, stop, out) -> None:
    """Dense output for ``times[start:stop]``, which lie in the step ``(t0, t0 + h]``."""
    thetas = [(times[i] - t0) / h for i in range(start, stop)]
    if len(thetas) == 1 and thetas[0] == 1.0:
        out.append(y1)
        return
    theta = torch.tensor(thetas, dtype=y0.dtype, device=y0.device)
    out.extend(solver.interpolate(y0, K, h, theta).unbind(0))
