"""``solve``: the one entry point of the engine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import (
    InnerSolveError,
    InvalidInputError,
    MaxStepsExceededError,
    NonFiniteError,
    SolverError,
    StepSizeUnderflowError,
)
from .field import UserField, VectorField
from .integrate import integrate
from .methods import Method, make_controller, resolve, step_caps
from .norms import Norm, norm_for
from .solution import Solution, SolveStats, publish
from .state import State, StateLayout

GRADIENTS = ("backprop", "adjoint")

_STATUS = {
    MaxStepsExceededError: "max_steps_exceeded",
    StepSizeUnderflowError: "step_size_underflow",
    NonFiniteError: "non_finite",
    InnerSolveError: "inner_not_converged",
}


@dataclass
class Integration:
    """Everything needed to run (and re-run, for the adjoint) one integration on flat states.

    Built by :meth:`create`, which resolves the method and checks the options once.
    """

    method: Method
    options: dict[str, Any]
    rtol: float
    atol: float
    norm: Norm
    times: list[float]
    throw: bool
    max_steps: int
    max_nfe: int

    @classmethod
    def create(cls, method: str, options: dict[str, Any], rtol: float, atol: float, norm: Norm,
               times: list[float], throw: bool) -> "Integration":
        resolved, options = resolve(method, options)
        return cls(resolved, options, rtol, atol, norm, times, throw, *step_caps(options))

    def run(
        self,
        field: VectorField,
        y0: torch.Tensor,
        stats: SolveStats,
        times: list[float] | None = None,
    ) -> tuple[torch.Tensor, str, str]:
        """Integrate flat ``y0`` through ``times``; returns ``(T × n states, status, message)``."""
        times = self.times if times is None else times
        solver = self.method.make_solver(self.options, self.rtol, self.atol)
        # A fresh controller per run: it carries the previous error ratio of the PI law.
        controller = make_controller(self.method, self.options, self.rtol, self.atol, self.norm)
        out = [y0]
        status, message = "success", ""
        try:
            if getattr(solver, "whole_interval", False):
                # A solver that runs the whole interval itself (scipy's solve_ivp): no loop, no controller.
                nfe_start = field.nfe
                try:
                    out.extend(solver.solve_through(field, y0, times, stats))
                finally:
                    stats.nfe += field.nfe - nfe_start
            else:
                integrate(solver, controller, field, y0, times, out, stats,
                          max_steps=self.max_steps, max_nfe=self.max_nfe)
        except SolverError as err:
            if self.throw or type(err) not in _STATUS:
                raise
            status, message = _STATUS[type(err)], str(err)
            out.extend(torch.full_like(y0, math.nan) for _ in range(len(times) - len(out)))
        return torch.stack(out), status, message


def _check_times(t: torch.Tensor, layout: StateLayout) -> list[float]:
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"t must be a 1-D torch tensor of times, got {type(t).__name__}")
    if t.ndim != 1 or t.numel() < 1:
        raise InvalidInputError(f"t must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InvalidInputError(f"t has dtype {t.dtype}; it must be floating point")
    if t.device != layout.device:
        raise InvalidInputError(f"t is on {t.device} but y0 is on {layout.device}; move both to one device")
    if t.dtype != layout.dtype:
        raise InvalidInputError(
            f"t has dtype {t.dtype} but y0 has dtype {layout.dtype}; pass t.to(y0.dtype) (or y0 in t's dtype)"
        )
    times = t.detach().tolist()
    if not all(math.isfinite(x) for x in times):
        raise InvalidInputError(f"t contains non-finite values: {times}")
    diffs = [b - a for a, b in zip(times, times[1:])]
    if diffs and not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        raise InvalidInputError(
            "t must be strictly increasing or strictly decreasing (no repeats); "
            f"got {times if len(times) <= 8 else times[:8] + ['...']}"
        )
    return times


def _check_tolerance(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise InvalidInputError(
            f"{name} must be a positive finite number, got {value!r}; "
            "typical values are rtol=1e-7, atol=1e-9 (torchdiffeq's defaults) or 1e-3 for training"
        )
    return float(value)


def _user_norm(norm: Any, layout: StateLayout) -> Norm:
    if norm is None:
        return norm_for(layout.sizes)
    if not callable(norm):
        raise InvalidInputError(f"option norm must be a callable taking the state, got {norm!r}")
    return lambda flat: torch.as_tensor(norm(layout.unflatten(flat)))


def solve(
    f: UserField,
    y0: State,
    t: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: float | None = None,
    gradient: str = "backprop",
    options: dict[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    adjoint_method: str | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_options: dict[str, Any] | None = None,
    throw: bool = True,
) -> Solution:
    """Solve ``dy/dt = f(t, y)``, ``y(t[0]) = y0``, and return the states at every time in ``t``.

    Args:
        f: vector field ``f(t, y)``; ``t`` is a 0-d tensor, ``y`` has the structure of ``y0``.
        y0: initial state, a tensor or a tuple of tensors (any shapes, one float dtype and device).
        t: 1-D strictly increasing or decreasing tensor of output times; ``t[0]`` is the start.
        method: a name from :data:`odekit.solve.methods.METHODS` (``odekit list-methods``).
        rtol, atol: relative and absolute tolerances of adaptive methods.
        step_size: step of fixed-step methods (default: step from one output time to the next).
        gradient: ``"backprop"`` differentiates through the solver's operations;
            ``"adjoint"`` solves the continuous adjoint backwards (thesis eqs. 2.31, 2.38,
            3.2–3.3) with memory independent of the number of steps.
        options: method options (``odekit.solve.methods``); unknown names are an error.
        adjoint_*: settings of the backward solve; they default to the forward ones.
            ``adjoint_params`` are the tensors ``f`` depends on (default: ``f.parameters()``
            for an ``nn.Module``). ``adjoint_options={"norm": "seminorm"}`` leaves the
            parameter adjoints out of the error estimate (fewer backward steps).
        throw: if false, a failed solve (step cap, step underflow, non-finite values) returns a
            :class:`Solution` whose ``status`` names the failure instead of raising.

    Returns:
        A :class:`Solution`; ``ys`` has shape ``(len(t), *y0.shape)`` (or a tuple of such).
    """
    layout = StateLayout.of(y0)
    times = _check_times(t, layout)
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)
    if gradient not in GRADIENTS:
        raise InvalidInputError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    options = dict(options or {})
    if step_size is not None:
        options["step_size"] = step_size
    forward = Integration.create(method, options, rtol, atol, _user_norm(options.get("norm"), layout), times, throw)
    flat0 = layout.flatten(y0)
    if not bool(torch.isfinite(flat0.detach()).all()):
        raise InvalidInputError("y0 contains NaN or inf; every entry of the initial state must be finite")
    stats = SolveStats(method=method)
    publish(stats)

    if gradient == "adjoint":
        from .adjoint import adjoint_solve

        # Like torchdiffeq, the backward pass inherits the forward options (but not a state norm,
        # which cannot measure the augmented state) unless given its own.
        if adjoint_options is None:
            adjoint_options = {k: v for k, v in options.items() if k != "norm"}
        adjoint_options = dict(adjoint_options)
        adjoint_norm = adjoint_options.pop("norm", "mixed")
        if adjoint_norm not in ("mixed", "seminorm"):
            raise InvalidInputError(
                f"adjoint_options['norm'] must be 'mixed' (default) or 'seminorm', got {adjoint_norm!r}"
            )
        backward = Integration.create(
            adjoint_method or method,
            adjoint_options,
            _check_tolerance("adjoint_rtol", rtol if adjoint_rtol is None else adjoint_rtol),
            _check_tolerance("adjoint_atol", atol if adjoint_atol is None else adjoint_atol),
            forward.norm,
            times,
            throw,
        )
        ys_flat, status, message = adjoint_solve(
            f, layout, flat0, t, forward, backward, adjoint_params, stats, adjoint_norm == "seminorm"
        )
    else:
        field = VectorField(f, layout, t.dtype)
        if t.requires_grad and torch.is_grad_enabled() and len(times) > 1:
            ys_flat, status, message = _run_with_time_gradients(forward, field, flat0, t, times, stats)
        else:
            ys_flat, status, message = forward.run(field, flat0, stats)
        if ys_flat.requires_grad:
            ys_flat = _CountBackward.apply(ys_flat, stats)
    return Solution(ts=t, ys=layout.unflatten_stacked(ys_flat), stats=stats, status=status, message=message)


def _run_with_time_gradients(
    forward: Integration, field: VectorField, flat0: torch.Tensor, t: torch.Tensor, times: list[float],
    stats: SolveStats,
) -> tuple[torch.Tensor, str, str]:
    """Backprop solve whose outputs also carry the exact derivatives with respect to ``t``.

    ``∂y(t_i)/∂t_i = f(t_i, y_i)``, and moving ``t_0`` equals moving ``y0`` by ``−f(t_0, y0)``
    per unit time; both enter as terms whose value is zero and whose gradient is that slope, so
    the values are untouched and no gradient flows through the step-size arithmetic.
    """
    with torch.no_grad():
        slope0 = field(times[0], flat0.detach())
    start = flat0 - (t[0] - t[0].detach()) * slope0
    ys, status, message = forward.run(field, start, stats)
    with torch.no_grad():
        slopes = torch.stack([field(times[i], ys[i].detach()) for i in range(1, len(times))])
    stats.nfe += len(times)
    moved = ys[1:] + (t[1:] - t[1:].detach())[:, None].to(ys.dtype) * slopes
    return torch.cat([flat0[None], moved]), status, message


class _CountBackward(torch.autograd.Function):
    """Identity whose backward records that autograd differentiated every recorded ``f`` call."""

    @staticmethod
    def forward(ctx, ys: torch.Tensor, stats: SolveStats) -> torch.Tensor:
        ctx.stats = stats
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.stats.nfe_backward += ctx.stats.nfe
        return grad, None
