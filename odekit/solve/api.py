"""``solve``: the one entry point of the engine."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import tensor_loop
from .callbacks import StepCallbacks
from .controller import PIController
from .errors import (
    InnerSolveError,
    InnerSolveWarning,
    InvalidInputError,
    MaxStepsExceededError,
    NonFiniteError,
    SolverError,
    StepSizeUnderflowError,
    choice_option,
)
from .events import EventGradient, combine, loop_event
from .field import UserField, VectorField
from .integrate import Event, LoopHooks, integrate
from .methods import LoopOptions, Method, loop_options, make_controller, pi_controller, resolve, step_caps
from .norms import Norm, norm_for, tightest
from .runge_kutta import RungeKutta
from .solution import DenseOutput, Solution, SolveStats, Status, publish
from .state import State, StateLayout
from .tensor_loop import CompileWarning

GRADIENTS = ("backprop", "adjoint", "checkpoint", "implicit")

_STATUS = {
    MaxStepsExceededError: Status.MAX_STEPS_EXCEEDED,
    StepSizeUnderflowError: Status.STEP_SIZE_UNDERFLOW,
    NonFiniteError: Status.NON_FINITE,
    InnerSolveError: Status.INNER_NOT_CONVERGED,
}


@dataclass
class Run:
    """What one integration returns: flat states (one row per output time), status, event time."""

    ys: torch.Tensor
    status: Status
    message: str
    event_t: float | None = None
    report: list | None = None  # where a backward pass finds the Solution to mark a failure on


@dataclass
class Integration:
    """Everything needed to run (and re-run, for the adjoint) one integration on flat states.

    Built by :meth:`create`, which resolves the method and checks the options once.
    """

    method: Method
    options: dict[str, Any]
    rtol: float | torch.Tensor
    atol: float | torch.Tensor
    norm: Norm
    times: list[float]
    throw: bool
    max_steps: int
    max_nfe: int
    loop: LoopOptions
    compile: bool = False

    @classmethod
    def create(cls, method: str, options: dict[str, Any], rtol, atol, norm: Norm, times: list[float],
               throw: bool, compile: bool = False) -> Integration:
        resolved, options = resolve(method, options)
        return cls(resolved, options, rtol, atol, norm, times, throw, *step_caps(options), loop_options(options),
                   compile)

    def run(
        self,
        field: VectorField,
        y0: torch.Tensor,
        stats: SolveStats,
        times: list[float] | None = None,
        *,
        hooks: LoopHooks | None = None,
        event: Event | None = None,
        steps: list | None = None,
        trace: list | None = None,
    ) -> Run:
        """Integrate flat ``y0`` through ``times`` (or until ``event``); ``trace`` receives the
        accepted steps' :class:`~odekit.solve.integrate.StepRecord`."""
        times = self.times if times is None else times
        solver = self.method.make_solver(self.options, self.rtol, self.atol)
        field.perturb = self.loop.perturb or bool(self.loop.jump_t)
        grid = self._grid(field, y0, times) if self.loop.grid_constructor is not None else None
        # Built per run (the grid and event mode may differ); its state passes through the loop.
        controller = make_controller(self.method, self.options, self.rtol, self.atol, self.norm,
                                     grid=grid, open_ended=event is not None)
        out = [y0]
        status, message, event_t = Status.SUCCESS, "", None
        try:
            try:
                event_t = self._integrate(solver, controller, field, y0, times, out, stats, hooks, event, steps,
                                          trace)
            finally:
                unconverged = solver.record(stats)
        except SolverError as err:
            if self.throw or type(err) not in _STATUS:
                raise
            status, message = _STATUS[type(err)], str(err)
            out.extend(getattr(err, "states", ()))  # what a whole-interval solver reached before failing
            rows = 2 if event is not None else len(times)
            out.extend(torch.full_like(y0, math.nan) for _ in range(rows - len(out)))
        if unconverged and status == Status.SUCCESS:
            # A fixed step whose implicit stages stopped unconverged: the states are the inner
            # solver's last iterates, kept, but the solve did not succeed.
            warnings.warn(unconverged, InnerSolveWarning, stacklevel=3)
            status, message = Status.INNER_NOT_CONVERGED, unconverged
        return Run(torch.stack(out), status, message, event_t)

    def _integrate(self, solver, controller, field: VectorField, y0: torch.Tensor, times: list[float],
                   out: list[torch.Tensor], stats: SolveStats, hooks: LoopHooks | None, event: Event | None,
                   steps: list | None, trace: list | None) -> float | None:
        """The loop (or a whole-interval solver's own solve), appending the output states to ``out``."""
        if getattr(solver, "whole_interval", False):
            # A solver that runs the whole interval itself (scipy's solve_ivp): no loop, no controller.
            if event is not None or steps is not None or (hooks and any(vars(hooks).values())):
                raise InvalidInputError(
                    f"method {self.method.name!r} runs the whole interval at once: it supports neither "
                    "events, dense output nor step callbacks; use an odekit method (e.g. 'dopri5')"
                )
            nfe_start = field.nfe
            try:
                out.extend(solver.solve_through(field, y0, times, stats))
            finally:
                stats.nfe += field.nfe - nfe_start
            return None
        if self.compile or y0.device.type != "cpu":
            unsupported = self._not_for_tensor_loop(solver, controller, y0, hooks, event, steps, trace)
            if unsupported is None:
                self._integrate_tensor_loop(solver, controller, field, y0, times, out, stats)
                return None
            if self.compile:
                warnings.warn(f"compile=True compiles adaptive explicit Runge–Kutta solves; this one {unsupported}, "
                              "so it runs eagerly", CompileWarning, stacklevel=4)
        return integrate(solver, controller, field, y0, times, out, stats, max_steps=self.max_steps,
                         max_nfe=self.max_nfe, cubic=self.loop.cubic, hooks=hooks,
                         breakpoints=self.loop.breakpoints, event=event, steps=steps, trace=trace)

    def _not_for_tensor_loop(self, solver, controller, y0: torch.Tensor, hooks: LoopHooks | None,
                             event: Event | None, steps: list | None, trace: list | None) -> str | None:
        """Why the tensor loop cannot run this solve, or ``None`` if it can."""
        reasons = [
            (not isinstance(solver, RungeKutta) or not solver.adaptive, f"uses method {self.method.name!r}"),
            (not isinstance(controller, PIController), "has a fixed grid"),
            (y0.is_complex(), "has a complex state"),
            (hooks is not None and any(vars(hooks).values()), "has step callbacks"),
            (event is not None, "has an event"),
            (steps is not None, "keeps dense output"),
            (trace is not None, "re-takes its steps (gradient='checkpoint' or a differentiable t)"),
            (self.loop.breakpoints is not None or self.loop.perturb, "has step_t, jump_t or perturb"),
            (tensor_loop.norm_segments(self.norm) is None, "has a user-defined error norm"),
        ]
        return next((why for bad, why in reasons if bad), None)

    def _integrate_tensor_loop(self, solver: RungeKutta, controller: PIController, field: VectorField,
                               y0: torch.Tensor, times: list[float], out: list[torch.Tensor],
                               stats: SolveStats) -> None:
        """The solve as one row of :mod:`~odekit.solve.tensor_loop` (compiled with ``compile``)."""
        grid = torch.tensor([times], dtype=torch.float64, device=y0.device)
        s = tensor_loop.stepping(field.f, field.layout, True, field.t_dtype, grid, solver, controller,
                                 self.max_steps, tensor_loop.norm_segments(self.norm))
        carry, nfe = tensor_loop.run(s, y0[None], compile=self.compile, max_nfe=self.max_nfe)
        stats.nfe += nfe
        field.nfe += nfe
        stats.steps_accepted += int(carry.accepted[0])
        stats.steps_rejected += int(carry.rejected[0])
        reached = int(carry.index[0])
        out.extend(carry.rows[1:reached, 0].unbind(0))
        code = int(carry.failure[0])
        if code:
            error, why = tensor_loop.FAILURES[code]
            advice = ("check f" if code in (tensor_loop.NON_FINITE, tensor_loop.NON_FINITE_UNDERFLOW) else
                      "raise max_num_steps or max_nfe, loosen rtol/atol, or use a stiff method "
                      "(method='auto' or 'ndf')")
            raise error(f"{why} at t={float(carry.failed_at[0]):.6g} (target {times[-1]:.6g}); {advice}")

    def _grid(self, field: VectorField, y0: torch.Tensor, times: list[float]) -> list[float]:
        """The user's ``grid_constructor(f, y0, t)``, checked to run from the first to the last time."""
        t = torch.tensor(times, dtype=field.t_dtype, device=y0.device)
        grid = self.loop.grid_constructor(field.f, field.layout.unflatten(y0), t)
        points = [float(x) for x in torch.as_tensor(grid).detach().reshape(-1).tolist()]
        steps = [b - a for a, b in zip(points, points[1:])]
        direction = 1.0 if times[-1] > times[0] else -1.0
        monotone = all(direction * d > 0 for d in steps)
        if len(points) < 2 or points[0] != times[0] or points[-1] != times[-1] or not monotone:
            raise InvalidInputError(
                f"grid_constructor returned {points[:6]}{'…' if len(points) > 6 else ''}: the grid must run "
                f"strictly monotonically from t[0]={times[0]:.6g} to t[-1]={times[-1]:.6g}, both included"
            )
        return points


def _check_times(t: torch.Tensor, layout: StateLayout) -> list[float]:
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"t must be a 1-D torch tensor of times, got {type(t).__name__}")
    if t.ndim != 1 or t.numel() < 1:
        raise InvalidInputError(f"t must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InvalidInputError(f"t has dtype {t.dtype}; it must be floating point")
    if t.device != layout.device:
        raise InvalidInputError(f"t is on {t.device} but y0 is on {layout.device}; move both to one device")
    if t.dtype != layout.real_dtype:
        raise InvalidInputError(
            f"t has dtype {t.dtype} but y0 has dtype {layout.dtype}; pass t.to({layout.real_dtype}) "
            "(or y0 in t's dtype); odekit.torchdiffeq converts t for you as torchdiffeq does"
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


def _check_tolerance(name: str, value: Any, layout: StateLayout) -> float | torch.Tensor:
    """A positive finite number, or per-component tolerances as a flat tensor of the state's size.

    Per-component values are a tensor broadcastable to ``y0`` (tensor states) or a tuple with one
    number or tensor per component (tuple states).
    """
    hint = ("typical values are rtol=1e-7, atol=1e-9 (torchdiffeq's defaults) or 1e-3 for training; "
            "per-component tolerances are a tensor shaped like y0 (a tuple of them for tuple states)")
    if isinstance(value, (tuple, list)) and layout.is_tuple:
        if len(value) != len(layout.shapes):
            raise InvalidInputError(
                f"{name} has {len(value)} entries but the state has {len(layout.shapes)} components")
        parts = [torch.as_tensor(v, dtype=layout.real_dtype, device=layout.device) for v in value]
        try:
            flat = torch.cat([p.expand(s).reshape(-1) for p, s in zip(parts, layout.shapes)])
        except RuntimeError:
            raise InvalidInputError(
                f"{name}: each entry must be a number or broadcast to its component's shape") from None
    elif isinstance(value, torch.Tensor) and value.numel() > 1:
        if layout.is_tuple or value.is_complex():
            raise InvalidInputError(f"{name} as a tensor needs a tensor state; for tuple states pass a tuple. {hint}")
        try:
            flat = value.detach().to(layout.real_dtype).to(layout.device).expand(layout.shapes[0]).reshape(-1)
        except RuntimeError:
            raise InvalidInputError(
                f"{name} has shape {tuple(value.shape)}, which does not broadcast to y0's {tuple(layout.shapes[0])}"
            ) from None
    else:
        try:
            number = value.item() if hasattr(value, "item") else value  # one-element tensors, numpy numbers
        except (RuntimeError, ValueError):  # a tensor or array of no or several elements
            number = value
        positive = isinstance(number, (int, float)) and not isinstance(number, bool) and number > 0
        if not positive or not math.isfinite(number):
            raise InvalidInputError(
                f"{name} must be a positive finite number, got {value!r} of type {type(value).__name__}; {hint}")
        return float(number)
    if not bool(torch.isfinite(flat).all()) or not bool((flat > 0).all()):
        raise InvalidInputError(f"{name} must be positive and finite in every component; {hint}")
    return flat.contiguous()


def _user_norm(norm: Any, layout: StateLayout) -> Norm:
    """The error norm on flat vectors: ``options['norm']`` applied in the state's structure, or the default.

    The user's norm must return one real number (a one-element tensor or a float); anything else
    is an :class:`InvalidInputError` at its first call instead of a failure deep in the controller.
    """
    if norm is None:
        return norm_for(layout.sizes)
    if not callable(norm):
        raise InvalidInputError(f"option norm must be a callable taking the state, got {norm!r}")

    def measured(flat: torch.Tensor) -> torch.Tensor:
        value = norm(layout.unflatten(flat))
        if isinstance(value, torch.Tensor):
            if value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
                return value if value.ndim == 0 else value.reshape(())
            returned = f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return torch.as_tensor(value)
        else:
            returned = f"a {type(value).__name__}" + (f" of length {len(value)}" if isinstance(value, tuple) else "")
        raise InvalidInputError(
            f"option norm must return one real number (a 0-d tensor or a float), but it returned {returned}; "
            "e.g. norm=lambda y: y.abs().max() (for a tuple state: max(c.abs().max() for c in y))"
        )

    return measured


@torch.compiler.disable  # compiled callers run the solve eagerly: one graph break, no recompiles (see docs)
def solve(
    f: UserField,
    y0: State,
    t: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float | torch.Tensor = 1e-7,
    atol: float | torch.Tensor = 1e-9,
    step_size: float | None = None,
    gradient: str = "backprop",
    options: dict[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    adjoint_method: str | None = None,
    adjoint_rtol: float | torch.Tensor | None = None,
    adjoint_atol: float | torch.Tensor | None = None,
    adjoint_options: dict[str, Any] | None = None,
    event_fn: Callable[[torch.Tensor, State], torch.Tensor] | None = None,
    callbacks: StepCallbacks | None = None,
    dense: bool = False,
    throw: bool = True,
    args: Any = None,
    solver: Any = None,
    controller: Any = None,
    per_sample: bool = False,
    compile: bool = False,
) -> Solution:
    """Solve ``dy/dt = f(t, y)``, ``y(t[0]) = y0``, and return the states at every time in ``t``.

    Args:
        f: vector field ``f(t, y)``; ``t`` is a 0-d tensor, ``y`` has the structure of ``y0``.
        y0: initial state, a tensor or a tuple of tensors (any shapes, one float or complex dtype
            and one device).
        t: 1-D strictly increasing or decreasing tensor of output times, in ``y0``'s (real) dtype;
            ``t[0]`` is the start.
        method: a name from :data:`odekit.solve.methods.METHODS` (``odekit methods``).
        rtol, atol: relative and absolute tolerances of adaptive methods: numbers, or
            per-component tensors shaped like ``y0`` (a tuple of them for tuple states).
        step_size: step of fixed-step methods (default: step from one output time to the next).
        gradient: ``"backprop"`` differentiates through the solver's operations;
            ``"adjoint"`` solves the continuous adjoint backwards (thesis eqs. 2.31, 2.38,
            3.2–3.3) with memory independent of the number of steps; ``"checkpoint"`` gives
            backprop's gradient (of the discretisation) in O(√steps) memory by re-taking the
            steps from saved states (explicit Runge–Kutta methods; parameters as for the adjoint);
            ``"implicit"`` (proximal, implicit Runge–Kutta and BDF methods) backpropagates through
            the steps but differentiates each converged implicit stage by the implicit function
            theorem, solving ``(I − σ ∂f/∂z)ᵀ λ = g`` (coupled stages: ``(I − h A ⊗ J)ᵀ λ = g``) by
            GMRES, so memory does not grow with the inner (Newton, FR, …) iterations.
        options: method options (``odekit methods``); unknown names are an error.
        adjoint_*: settings of the backward solve; they default to the forward ones.
            ``adjoint_params`` are the tensors ``f`` depends on (default: ``f.parameters()``
            for an ``nn.Module``). ``adjoint_options={"norm": "seminorm"}`` leaves the
            parameter adjoints out of the error estimate (fewer backward steps); a callable norm
            receives ``(t, y…, a…, g…)`` (torchdiffeq's convention; ``t`` is zero).
        event_fn: a terminal event ``g(t, y)``: with it ``t`` must be ``(t0, t1)`` (only the
            start and direction count), the solve stops where an entry of ``g`` changes sign,
            and :attr:`Solution.event_t` holds that time, differentiable (implicit function theorem).
        callbacks: :class:`StepCallbacks` called around every forward (and backward) step.
        dense: keep every step's interpolant; :attr:`Solution.dense` then evaluates the solution
            anywhere in ``[t[0], t[-1]]``.
        throw: if false, a failed solve (step cap, step underflow, non-finite values) returns a
            :class:`Solution` whose ``status`` names the failure instead of raising.
        solver, controller: the method and the step-size controller as objects
            (:mod:`odekit.solve.spec`: ``Dopri5()``, ``ProxBDF(order=2, inner=LBFGS(memory=10))``,
            ``PIController(rtol=…, atol=…)``, ``FixedGrid(step_size=…)``), in place of ``method``,
            ``rtol``/``atol``, ``step_size`` and ``options``; ``gradient`` may be an object too
            (``Backprop()``, ``BacksolveAdjoint(…)``, ``RecursiveCheckpoint()``).
        args: data for ``f``: with it ``f`` is called as ``f(t, y, args)``. Any tensor, or tuple,
            list or dict of them (and other values); gradients reach its tensors under every
            gradient method (the adjoint and checkpoint methods take them as parameters).

        per_sample: the first dimension of ``y0`` is a batch of independent problems, each with
            its own time, step size and accept/reject (:mod:`odekit.solve.per_sample`); ``t`` may
            then be ``(T,)`` or ``(batch, T)``, ``f`` receives ``t`` of shape ``(batch,)``, and
            ``sol.stats.per_sample`` holds each sample's counters; ``nfe`` counts batched calls.
            Adaptive explicit RK methods step on the tensor loop (compilable; gradients
            ``"backprop"``, ``"checkpoint"``, ``"adjoint"`` per sample,
            :mod:`odekit.solve.per_sample_adjoint`). Every other method (proximal, BDF/NDF,
            implicit RK, fixed grids) and gradient runs each sample's own solve in lockstep,
            batching its calls of ``f`` (:mod:`odekit.solve.lockstep`). Not with ``event_fn``,
            ``callbacks`` or ``dense``.
        compile: run each step — stages with ``f`` inlined, error norm, controller, dense output —
            as one ``torch.compile``d graph over a loop state held in tensors
            (:mod:`odekit.solve.tensor_loop`); backprop and the adjoint differentiate it. Adaptive
            explicit Runge–Kutta methods without events, callbacks, dense output or a user norm;
            anything else runs eagerly with a :class:`~odekit.solve.tensor_loop.CompileWarning`.
            The first solve of a shape pays the compile time; later ones reuse the graph.

    Returns:
        A :class:`Solution`; ``ys`` has shape ``(len(t), *y0.shape)`` (or a tuple of such).
    """
    if solver is not None or controller is not None or not isinstance(gradient, str):
        from .spec import expand

        return solve(f, y0, t, per_sample=per_sample, compile=compile, **expand(dict(
            method=method, rtol=rtol, atol=atol, step_size=step_size, gradient=gradient, options=options,
            adjoint_params=adjoint_params, adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol, adjoint_options=adjoint_options, event_fn=event_fn, callbacks=callbacks,
            dense=dense, throw=throw, args=args, solver=solver, controller=controller)))
    if per_sample:
        unsupported = [name for name, value in (("event_fn", event_fn), ("callbacks", callbacks), ("dense", dense))
                       if value]
        if unsupported:
            raise InvalidInputError(f"per_sample=True does not take {', '.join(unsupported)} yet")
        return _solve_per_sample(f, y0, t, method, rtol, atol, step_size, options, throw, compile, gradient, args,
                                 adjoint_params, adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options)
    if args is not None:
        if gradient in ("adjoint", "checkpoint"):
            from .adjoint import default_params

            adjoint_params = default_params(f, adjoint_params, gradient, args_given=True) + _tensors_in(args)
        f = _WithArgs(f, args)
    layout = StateLayout.of(y0)
    times = _check_times(t, layout)
    if layout.real_dtype in LOW_PRECISION:
        return _solve_in_float32(
            f, y0, t, layout, method=method, rtol=rtol, atol=atol, step_size=step_size, gradient=gradient,
            options=options, adjoint_params=adjoint_params, adjoint_method=adjoint_method,
            adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_options=adjoint_options,
            event_fn=event_fn, callbacks=callbacks, dense=dense, throw=throw, compile=compile)
    rtol, atol = _check_tolerance("rtol", rtol, layout), _check_tolerance("atol", atol, layout)
    if gradient not in GRADIENTS:
        raise InvalidInputError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    options = dict(options or {})
    if step_size is not None:
        options["step_size"] = step_size
    if gradient == "implicit":
        from .methods import METHODS

        implicit = [name for name, m in METHODS.items() if "stage_gradient" in m.options]
        if method not in implicit:
            raise InvalidInputError(f"gradient='implicit' differentiates the implicit stages of the proximal, implicit "
                                    f"Runge–Kutta and BDF methods ({', '.join(implicit)}); {method!r} has none: use "
                                    "'backprop' or 'adjoint'")
        if event_fn is not None or dense:
            raise InvalidInputError("gradient='implicit' takes neither event_fn nor dense=True")
        if layout.dtype.is_complex:
            raise InvalidInputError("gradient='implicit' solves its adjoint systems by real GMRES; for a complex "
                                    "state use gradient='backprop' or 'adjoint'")
        options["stage_gradient"], gradient = "implicit", "backprop"
    forward = Integration.create(method, options, rtol, atol, _user_norm(options.get("norm"), layout), times, throw,
                                 compile)
    flat0 = layout.flatten(y0)
    if not bool(torch.isfinite(flat0.detach()).all()):
        raise InvalidInputError("y0 contains NaN or inf; every entry of the initial state must be finite")
    event, combined = None, None
    if event_fn is not None:
        if len(times) != 2:
            raise InvalidInputError(
                f"with event_fn, t must be (t0, t1) (the start and the direction), got {len(times)} times"
            )
        combined = combine(event_fn, t[0].detach(), y0)
        event = loop_event(combined, layout, t.dtype, tightest(atol))
    if gradient == "checkpoint" and event is not None:
        raise InvalidInputError("gradient='checkpoint' does not take event_fn; use 'backprop' or 'adjoint'")
    if dense and (gradient != "backprop" or event is not None):
        raise InvalidInputError("dense=True works with gradient='backprop' and without event_fn")
    callbacks = callbacks or StepCallbacks()
    hooks = callbacks.hooks(layout, t.dtype) if callbacks else None
    stats = SolveStats(method=method)
    publish(stats)
    steps: list | None = [] if dense else None

    if gradient == "adjoint":
        from .adjoint import adjoint_solve

        # Like torchdiffeq, the backward pass inherits the forward options (but not a state norm,
        # which cannot measure the augmented state) unless given its own.
        if adjoint_options is None:
            adjoint_options = {k: v for k, v in options.items() if k != "norm"}
        adjoint_options = dict(adjoint_options)
        adjoint_norm = adjoint_options.pop("norm", "mixed")
        # The stiff methods read y(t) from the forward dense output: solved backwards, a stiff
        # problem's decaying modes grow, and the backward state is lost (docs/engine.md).
        trajectory = adjoint_options.pop("trajectory", forward.method.adjoint_trajectory)
        choice_option("adjoint_options['trajectory']", trajectory, ("backsolve", "interpolate"))
        if adjoint_norm not in ("mixed", "seminorm") and not callable(adjoint_norm):
            raise InvalidInputError(
                "adjoint_options['norm'] must be 'mixed' (default), 'seminorm' or a callable taking "
                f"(t, y…, a…, g…), got {adjoint_norm!r}"
            )
        backward = Integration.create(
            adjoint_method or method,
            adjoint_options,
            rtol if adjoint_rtol is None else _check_tolerance("adjoint_rtol", adjoint_rtol, layout),
            atol if adjoint_atol is None else _check_tolerance("adjoint_atol", adjoint_atol, layout),
            forward.norm,
            times,
            throw,  # with throw=False a failed backward solve sets the solution's status instead
            compile,
        )
        run = adjoint_solve(
            f, layout, flat0, t, forward, backward, adjoint_params, stats, adjoint_norm,
            state_norm=None if options.get("norm") is None else forward.norm,
            hooks=hooks, backward_hooks=callbacks.hooks(layout, t.dtype, adjoint=True) if callbacks else None,
            event=event, interpolate=trajectory == "interpolate",
        )
    elif gradient == "checkpoint":
        from .adjoint import default_params
        from .checkpoint import checkpoint_solve

        run = checkpoint_solve(f, layout, flat0, t, forward, default_params(f, adjoint_params, gradient), stats,
                               hooks)
    else:
        field = VectorField(f, layout, t.dtype)
        if t.requires_grad and torch.is_grad_enabled() and len(times) > 1:
            run = _run_with_time_gradients(forward, field, flat0, t, times, stats, hooks, event, steps)
        else:
            run = forward.run(field, flat0, stats, hooks=hooks, event=event, steps=steps)
        if run.ys.requires_grad:
            run.ys = _CountBackward.apply(run.ys, stats)
    ys_flat, ts, event_t = run.ys, t, None
    if event is not None:
        # A failed solve (throw=False) found no event: its time is NaN, not t0.
        event_t = torch.tensor(math.nan if run.event_t is None else run.event_t, dtype=t.dtype, device=t.device)
        # An event that holds at the start has the fixed time t0 (no crossing to differentiate).
        if run.event_t is not None and run.event_t != times[0] and ys_flat.requires_grad:
            event_t, last = EventGradient.apply((VectorField(f, layout, t.dtype), combined, layout), event_t,
                                                ys_flat[-1])
            ys_flat = torch.cat([ys_flat[:1], last[None]])
        ts = torch.stack([t[0], event_t.to(t.dtype)])
    solution = Solution(ts=ts, ys=layout.unflatten_stacked(ys_flat), stats=stats, status=run.status,
                        message=run.message, event_t=event_t,
                        dense=DenseOutput(steps, layout, t.dtype) if dense and steps else None)
    if run.report is not None:
        run.report.append(solution)  # the backward pass reports its own failure there
    return solution


def _solve_per_sample(f: UserField, y0: State, t: torch.Tensor, method: str, rtol, atol, step_size: float | None,
                      options: dict[str, Any] | None, throw: bool, compile: bool, gradient: str, args: Any,
                      adjoint_params, adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options) -> Solution:
    """The per-sample path of :func:`solve`: the tensor loop where it applies (adaptive explicit RK,
    :mod:`~odekit.solve.per_sample`), else every sample's own solve in lockstep
    (:mod:`~odekit.solve.lockstep`)."""
    from .per_sample import Settings, on_tensor_loop, sample_layout, solve_per_sample

    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise InvalidInputError("t must be a floating tensor of shape (T,) or (batch, T)")
    if gradient not in GRADIENTS:
        raise InvalidInputError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    layout, batch = sample_layout(y0)
    forward_method, forward_options = resolve(method, options)
    backward_options = options if adjoint_options is None else adjoint_options
    params = ()
    if gradient in ("adjoint", "checkpoint"):
        from .adjoint import default_params

        params = default_params(f, adjoint_params, gradient, args_given=args is not None) + _tensors_in(args)
    field = f if args is None else _WithArgs(f, args)

    def adjoint_on_tensor_loop() -> bool:
        # the tensor loop's per-sample adjoint takes no gradient to t and none of the host loop
        # adjoint's own options (trajectory, norm)
        return not t.requires_grad and not {"trajectory", "norm"} & set(backward_options or {}) \
            and on_tensor_loop(*resolve(adjoint_method or method, backward_options))

    tensor_loop = step_size is None and on_tensor_loop(forward_method, forward_options) \
        and (gradient in ("backprop", "checkpoint") or (gradient == "adjoint" and adjoint_on_tensor_loop()))
    if not tensor_loop:
        return _solve_in_lockstep(field, y0, t, layout, batch, compile, {
            "method": method, "rtol": rtol, "atol": atol, "step_size": step_size, "gradient": gradient,
            "options": options, "adjoint_params": params if gradient in ("adjoint", "checkpoint") else None,
            "adjoint_method": adjoint_method, "adjoint_rtol": adjoint_rtol, "adjoint_atol": adjoint_atol,
            "adjoint_options": adjoint_options, "throw": throw})

    def settings(resolved: Method, checked: dict[str, Any], chosen_rtol, chosen_atol) -> Settings:
        return Settings(resolved, checked, pi_controller(checked, chosen_rtol, chosen_atol), *step_caps(checked))

    forward = settings(forward_method, forward_options, rtol, atol)
    backward = None
    if gradient == "adjoint":
        backward = settings(*resolve(adjoint_method or method, backward_options),
                            rtol if adjoint_rtol is None else adjoint_rtol,
                            atol if adjoint_atol is None else adjoint_atol)
    ys, stats, status, message = solve_per_sample(field, y0, t, forward, throw=throw, compile=compile,
                                                  gradient=gradient, backward=backward, params=params)
    publish(stats)
    return Solution(ts=t, ys=ys, stats=stats, status=status, message=message)


def _solve_in_lockstep(f: Callable, y0: State, t: torch.Tensor, layout: StateLayout, batch: int, compile: bool,
                       settings: dict[str, Any]) -> Solution:
    """Every sample's own :func:`solve` with ``settings``, its calls of ``f`` batched
    (:mod:`~odekit.solve.lockstep`)."""
    from .lockstep import solve_in_lockstep
    from .per_sample import CheckedField, sample_times

    sample_times(t, batch, t.device)  # shape, finiteness and order, each failure naming its sample
    times = list(t.unbind(0)) if t.ndim == 2 else [t] * batch
    if compile:
        warnings.warn(f"compile=True: per_sample=True with method {settings['method']!r} solves each sample by "
                      "its own loop in lockstep, which is not compiled; solving eagerly", CompileWarning,
                      stacklevel=3)
    samples = [tuple(p[b] for p in y0) if layout.is_tuple else y0[b] for b in range(batch)]
    ys, stats, status, message = solve_in_lockstep(
        CheckedField(f, layout, batch), samples, times, layout,
        lambda field, y, times_b: solve(field, y, times_b, **settings))
    publish(stats)
    return Solution(ts=t, ys=ys, stats=stats, status=status, message=message)


class _WithArgs:
    """``f(t, y, args)`` as the engine's ``f(t, y)``."""

    def __init__(self, f: Callable, args: Any) -> None:
        self.f, self.args = f, args

    def __call__(self, t: torch.Tensor, y: State) -> State:
        return self.f(t, y, self.args)


def _tensors_in(args: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of ``args`` (nested tuples, lists and dicts) that take gradients."""
    from torch.utils._pytree import tree_leaves

    return tuple(x for x in tree_leaves(args) if isinstance(x, torch.Tensor) and x.requires_grad)


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _solve_in_float32(f: UserField, y0: State, t: torch.Tensor, layout: StateLayout, **settings: Any) -> Solution:
    """A float16/bfloat16 solve with the state carried in float32 and ``f`` evaluated in the low dtype.

    Summing small steps in bfloat16 loses them (``1 - 1e-3`` rounds to ``1``: Euler stands
    still), so the engine keeps its state, steps and error estimates in float32; ``f`` and
    ``event_fn`` still see (and return) the low dtype, and the results come back in it.
    Callbacks and dense output see the float32 state. An adaptive tolerance below the low
    dtype's resolution is refused: ``f``'s own rounding would dominate every error estimate.
    """
    low, work = layout.real_dtype, torch.float32
    resolved, _ = resolve(settings["method"], dict(settings["options"] or {}))
    fixed = settings["step_size"] is not None or (settings["options"] or {}).get("step_size") is not None
    eps = torch.finfo(low).eps
    if resolved.adaptive and not fixed:
        for name in ("rtol", "adjoint_rtol"):
            value = settings[name]
            if value is not None and float(torch.as_tensor(value, dtype=torch.float64).min()) < eps:
                raise InvalidInputError(
                    f"{name}={value!r} is below the resolution of {low} ({eps:.3g}): f's own rounding "
                    f"dominates any error estimate there, so the solve would stall; pass {name} >= {eps:.3g} "
                    "or solve in float32 (y0.float(), t.float())"
                )

    def cast(x: State, dtype: torch.dtype) -> State:
        return tuple(v.to(dtype) for v in x) if isinstance(x, tuple) else x.to(dtype)

    def f_work(s: torch.Tensor, y: State) -> State:
        return cast(f(s.to(low), cast(y, low)), work)

    if settings["gradient"] == "adjoint" and settings["adjoint_params"] is None and isinstance(f, torch.nn.Module):
        settings["adjoint_params"] = tuple(f.parameters())  # the wrapper has none of its own
    event_fn = settings["event_fn"]
    if event_fn is not None:
        settings["event_fn"] = lambda s, y: event_fn(s.to(low), cast(y, low))
    sol = solve(f_work, cast(y0, work), t.to(work), **settings)
    sol.ys, sol.ts = cast(sol.ys, low), sol.ts.to(low)
    sol.event_t = None if sol.event_t is None else sol.event_t.to(low)
    return sol


def _run_with_time_gradients(
    forward: Integration, field: VectorField, flat0: torch.Tensor, t: torch.Tensor, times: list[float],
    stats: SolveStats, hooks: LoopHooks | None, event: Event | None, steps: list | None,
) -> Run:
    """Backprop solve whose outputs also carry the exact derivatives with respect to ``t``.

    ``∂y(t_i)/∂t_i = f(t_i, y_i)``, and moving ``t_0`` equals moving ``y0`` by ``−f(t_0, y0)``
    per unit time; both enter as terms whose value is zero and whose gradient is that slope, so
    the values are untouched and no gradient flows through the step-size arithmetic. With an
    event, ``t[1]`` only gives the direction and gets no gradient.
    """
    with torch.no_grad():
        slope0 = field(times[0], flat0.detach())
    start = flat0 - (t[0] - t[0].detach()) * slope0
    run = forward.run(field, start, stats, hooks=hooks, event=event, steps=steps)
    if event is not None:
        stats.nfe += 1
        run.ys = torch.cat([flat0[None], run.ys[1:]])  # y(t0) = y0 whatever t0 is
        return run
    ys = run.ys
    # Rows a failed solve (throw=False) never reached are NaN constants: they move with no t.
    reached = [True] * len(times) if run.status == Status.SUCCESS else torch.isfinite(ys).all(dim=1).tolist()
    with torch.no_grad():
        slopes = torch.stack([field(times[i], ys[i].detach()) if reached[i] else torch.zeros_like(ys[i])
                              for i in range(1, len(times))])
    stats.nfe += len(times)
    moved = ys[1:] + (t[1:] - t[1:].detach())[:, None].to(ys.dtype) * slopes
    run.ys = torch.cat([flat0[None], moved])
    return run


class _CountBackward(torch.autograd.Function):
    """Identity whose backward records that autograd differentiated every recorded ``f`` call."""

    @staticmethod
    def forward(ctx, ys: torch.Tensor, stats: SolveStats) -> torch.Tensor:
        ctx.stats = stats
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # gradient="implicit" solved its stages without a graph: those evaluations are not
        # differentiated (its GMRES products are counted as they happen, inner.StageGradient)
        ctx.stats.nfe_backward += ctx.stats.nfe - ctx.stats.extra.get("nfe_without_graph", 0)
        return grad, None
