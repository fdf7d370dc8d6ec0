"""Checkpointed discrete adjoint: the exact gradient of the steps taken, in O(√steps) memory.

``gradient="backprop"`` keeps the graph of every step: memory grows with the number of steps.
``gradient="adjoint"`` keeps none but differentiates the continuous problem (its gradient
differs from the discretisation's by the solver's error). This method gives backprop's
gradient with little memory (Griewank's checkpointing, as diffrax's
``RecursiveCheckpointAdjoint``): the forward solve records only the accepted steps' times and
sizes; the backward pass re-runs them without a graph from ``y0``, keeping the state every
``c = ⌈√N⌉`` steps, then re-runs each segment of ``c`` steps with a graph, newest first, and
backpropagates through it alone. Step sizes are constants, as under backprop (the controller's
decisions are not differentiated), so the two agree to rounding. Cost: two extra forward passes
(``2N`` steps, plus one evaluation per segment); memory: ``√N`` states plus one segment's graph.

Restricted to one-step methods whose solver state is rebuilt exactly from ``f`` at a step's start
(the explicit Runge–Kutta methods): a checkpoint is then just a state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import InvalidInputError
from .field import UserField, VectorField
from .integrate import StepInterpolant, StepRecord
from .solution import SolveStats
from .state import StateLayout


@dataclass
class _Spec:
    f: UserField
    layout: StateLayout
    forward: Any  # the Integration
    stats: SolveStats
    hooks: Any
    outcome: dict


def check_checkpointable(forward) -> None:
    """Refuse a configuration whose steps cannot be re-taken exactly from a checkpointed state."""
    solver = forward.method.make_solver(forward.options, forward.rtol, forward.atol)
    if not getattr(solver, "restartable", False):
        raise InvalidInputError(
            f"gradient='checkpoint' re-takes steps from saved states, which needs a one-step method (the explicit "
            f"Runge–Kutta methods: dopri5, tsit5, rk4, …); {forward.method.name!r} carries more state between "
            "steps: use gradient='backprop' or 'adjoint'"
        )
    if forward.loop.perturb or forward.loop.cubic:
        raise InvalidInputError("gradient='checkpoint' does not take options perturb or interp='cubic'; use "
                                "gradient='backprop'")


def checkpoint_solve(f: UserField, layout: StateLayout, flat0: torch.Tensor, t: torch.Tensor, forward,
                     params: Sequence[torch.Tensor], stats: SolveStats, hooks=None):
    """Forward solve without a graph; its gradients come from re-taken steps (see the module doc)."""
    check_checkpointable(forward)
    outcome: dict = {}
    ys = _CheckpointSolve.apply(_Spec(f, layout, forward, stats, hooks, outcome), flat0, t, *params)
    run = outcome["run"]
    run.ys = ys
    return run


def _retake(solver, field: VectorField, adaptive: bool, records: Sequence[StepRecord], y: torch.Tensor,
            ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """Take ``records`` again from state ``y`` at the first one's start: the end state and the outputs."""
    start = records[0].t
    state = solver.init(start, y, field(start, y, 1) if solver.fsal or adaptive else None)
    outputs = []
    for record in records:
        y1, K = solver.step(field, record.t, y, record.h, state)
        if record.outputs:
            values = StepInterpolant(solver, field, record.t, record.h, y, y1, K, False)(
                [theta for _, theta in record.outputs])
            outputs.extend(zip((row for row, _ in record.outputs), values))
        state = solver.accepted(state, K)
        y = y1
        if record.restart:
            state = solver.init(record.t_next, y, field(record.t_next, y, 1) if solver.fsal or adaptive else None)
    return y, outputs


def time_gradients(field: VectorField, times: list[float], ys: torch.Tensor, grad_ys: torch.Tensor,
                   a_flowed: torch.Tensor, reached: int, t_dtype: torch.dtype) -> torch.Tensor:
    """``∂L/∂t``: ``⟨∂L/∂y_i, f(t_i, y_i)⟩`` for ``i ≥ 1`` and ``−⟨a(t_0), f(t_0, y_0)⟩`` for ``t_0``.

    ``a_flowed`` is the adjoint carried back to ``t_0`` from the later rows; rows past
    ``reached`` (never reached by a failed solve) get zero. PyTorch's complex cotangents are
    conjugated (a plain product for real states).
    """
    slopes = [field(times[i], ys[i]) for i in range(reached + 1)]
    parts = [-(a_flowed.conj() * slopes[0]).sum()]
    parts += [(grad_ys[i].conj() * slopes[i]).sum() for i in range(1, reached + 1)]
    parts += [slopes[0].new_zeros(()) for _ in range(reached + 1, len(times))]
    return torch.stack(parts).real.to(t_dtype)


class _CheckpointSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: _Spec, y0, t, *params):
        trace: list[StepRecord] = []
        with torch.no_grad():
            run = spec.forward.run(VectorField(spec.f, spec.layout, t.dtype), y0, spec.stats, hooks=spec.hooks,
                                   trace=trace)
        spec.outcome["run"] = run
        ctx.spec, ctx.trace = spec, trace
        ctx.save_for_backward(t, y0, run.ys, *params)
        return run.ys

    @staticmethod
    def backward(ctx, grad_ys):
        spec: _Spec = ctx.spec
        t, y0, ys, *params = ctx.saved_tensors
        forward, trace = spec.forward, ctx.trace
        solver = forward.method.make_solver(forward.options, forward.rtol, forward.atol)
        adaptive = forward.method.adaptive and forward.options.get("step_size") is None
        field = VectorField(spec.f, spec.layout, t.dtype)
        field.direction = 1.0 if forward.times[-1] > forward.times[0] else -1.0
        size = max(1, math.ceil(math.sqrt(len(trace))))
        segments = [trace[i : i + size] for i in range(0, len(trace), size)]
        with torch.no_grad():
            starts = [y0.detach()]
            for segment in segments[:-1]:
                starts.append(_retake(solver, field, adaptive, segment, starts[-1])[0])
        a = torch.zeros_like(y0)  # ∂L/∂(state at the end of the segment), from the later segments
        grad_params = [torch.zeros_like(p) for p in params]
        for start, segment in zip(reversed(starts), reversed(segments)):
            y = start.detach().requires_grad_(True)
            with torch.enable_grad():
                end, outputs = _retake(solver, field, adaptive, segment, y)
                roots = [end] + [value for _, value in outputs]
                weights = [a] + [grad_ys[row] for row, _ in outputs]
                keep = [i for i, r in enumerate(roots) if r.requires_grad]
                grads = torch.autograd.grad([roots[i] for i in keep], (y, *params), [weights[i] for i in keep],
                                            allow_unused=True) if keep else (None,) * (1 + len(params))
            a = torch.zeros_like(y0) if grads[0] is None else grads[0]
            grad_params = [acc if g is None else acc + g for acc, g in zip(grad_params, grads[1:])]
        grad_t = None
        if ctx.needs_input_grad[2]:
            reached = len(forward.times) - 1
            if spec.outcome["run"].status != "success":
                reached = int(torch.isfinite(ys).all(dim=1).nonzero().max())
            with torch.no_grad():
                grad_t = time_gradients(field, forward.times, ys, grad_ys, a, reached, t.dtype)
        spec.stats.nfe_backward += field.nfe
        return (None, a + grad_ys[0], grad_t, *grad_params)
