"""Continuous adjoint: gradients by solving the adjoint ODE backwards in time.

For ``dy/dt = f(t, y, θ)`` and a loss ``L`` of the states at the output times, the adjoint
``a(t) = ∂L/∂y(t)`` obeys ``da/dt = −a ∂f/∂y`` (thesis eq. 2.31 / 3.3) and
``dL/dθ = ∫ a ∂f/∂θ dt`` (eq. 2.38 / 3.2). Between consecutive output times we integrate the
augmented state ``[y, a, g]`` backwards, with ``dg/dt = −a ∂f/∂θ``, and add ``∂L/∂y(t_i)`` to
``a`` at each output time. Only the states at the output times are stored, so memory does not
grow with the number of solver steps. Time gradients need no integration: shifting an output
time ``t_i`` moves ``y(t_i)`` along ``f``, so ``∂L/∂t_i = ⟨∂L/∂y(t_i), f(t_i, y_i)⟩`` for
``i ≥ 1`` and ``∂L/∂t_0 = −⟨a(t_0), f(t_0, y_0)⟩``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint import time_gradients
from .errors import InvalidInputError
from .field import UserField, VectorField
from .norms import SegmentedRMSNorm
from .solution import DenseOutput, SolveStats, Status
from .state import StateLayout


class _AdjointDynamics:
    """``(t, [y, a, g]) ↦ [f, −a ∂f/∂y, −a ∂f/∂θ]``: one ``f`` call and one VJP.

    With a ``trajectory`` (the forward solve's dense output) ``y(t)`` is read from it instead of
    being solved backwards: the ``y`` block then stays constant (derivative 0).
    """

    def __init__(self, f: UserField, layout: StateLayout, params: tuple[torch.Tensor, ...],
                 trajectory: DenseOutput | None = None) -> None:
        self.f, self.layout, self.params, self.trajectory = f, layout, params, trajectory
        self.n = layout.numel

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n, layout = self.n, self.layout
        with torch.enable_grad():
            # A copy rather than a detached view: it keeps forward-mode tangents, so the
            # Newton–Krylov inner solver of the proximal methods can take JVPs of these dynamics.
            state = z[:n] if self.trajectory is None else self.trajectory.flat_at(float(t)).detach()
            y = state.clone().requires_grad_(True)
            fy = layout.flatten_derivative(self.f(t, layout.unflatten(y)), t)
            inputs = (y, *self.params)
            # f may depend on neither y nor a parameter (f = cos(t)): then every product is zero.
            vjps = (torch.autograd.grad(fy, inputs, -z[n : 2 * n], allow_unused=True) if fy.requires_grad
                    else (None,) * len(inputs))
        # Called under no_grad (the backward pass), so the result holds no graph.
        parts = [fy if self.trajectory is None else torch.zeros_like(fy)]
        parts += [torch.zeros_like(x).reshape(-1) if g is None else g.reshape(-1) for x, g in zip(inputs, vjps)]
        return torch.cat(parts)


def default_params(f: UserField, adjoint_params: Sequence[torch.Tensor] | None, gradient: str = "adjoint",
                   *, args_given: bool = False) -> tuple[torch.Tensor, ...]:
    """The tensors gradients go to: ``adjoint_params``, else ``f.parameters()`` of an ``nn.Module``.

    With ``args_given`` a plain function may have none (its tensors come through ``args``).
    """
    if adjoint_params is not None:
        params = tuple(adjoint_params)
        bad = [i for i, p in enumerate(params) if not isinstance(p, torch.Tensor)]
        if bad:
            raise InvalidInputError(f"adjoint_params[{bad[0]}] is not a tensor; pass the tensors f depends on")
        return tuple(p for p in params if p.requires_grad)
    if isinstance(f, nn.Module):
        return tuple(p for p in f.parameters() if p.requires_grad)
    if args_given:
        return ()
    raise InvalidInputError(
        f"gradient={gradient!r} needs to know which tensors f depends on: make f an nn.Module or pass "
        "adjoint_params=(...) (an empty tuple if f has no parameters)"
    )


def adjoint_solve(
    f: UserField,
    layout: StateLayout,
    flat0: torch.Tensor,
    t: torch.Tensor,
    forward,
    backward,
    adjoint_params: Sequence[torch.Tensor] | None,
    stats: SolveStats,
    adjoint_norm,
    *,
    state_norm=None,
    hooks=None,
    backward_hooks=None,
    event=None,
    interpolate: bool = False,
):
    """Forward solve without a graph, with gradients supplied by the backward adjoint solve.

    ``interpolate`` keeps the forward solve's dense output and reads ``y(t)`` from it in the
    backward solve (SciML's interpolating adjoint): memory grows with the forward steps, but the
    state is not solved backwards, which for a stiff problem is unstable (its decaying modes grow
    backwards in time).

    ``adjoint_norm`` is ``"mixed"``, ``"seminorm"`` or a callable on ``(t, y…, a…, g…)``;
    ``state_norm`` is the user's forward norm, which then measures ``y`` and ``a`` (as in
    torchdiffeq). With ``event``, the forward solve stops at the event and the backward solve
    starts there. Returns the forward :class:`~odekit.solve.api.Run`.
    """
    params = default_params(f, adjoint_params)
    outcome: dict = {}
    spec = _Spec(f, layout, forward, backward, stats, adjoint_norm, state_norm, hooks, backward_hooks, event, outcome,
                 interpolate)
    ys = _AdjointSolve.apply(spec, flat0, t, *params)
    run = outcome["run"]
    run.ys = ys
    run.report = outcome.setdefault("solutions", [])
    return run


@dataclass
class _Spec:
    f: UserField
    layout: StateLayout
    forward: object
    backward: object
    stats: SolveStats
    adjoint_norm: object
    state_norm: object
    hooks: object
    backward_hooks: object
    event: object
    outcome: dict
    interpolate: bool = False  # y(t) backwards from the forward dense output instead of a backward solve


def _augmented_norm(spec: _Spec, param_shapes: list[torch.Size]):
    """The error norm of the backward solve on the flat augmented state ``[y, a, g]``."""
    layout, n = spec.layout, spec.layout.numel
    param_sizes = [int(torch.Size(s).numel()) for s in param_shapes]
    seminorm = spec.adjoint_norm == "seminorm"
    if callable(spec.adjoint_norm):
        user = spec.adjoint_norm

        def custom(z: torch.Tensor) -> torch.Tensor:
            y, a, g = z[:n], z[n : 2 * n], z[2 * n :]
            ys = layout.unflatten(y) if layout.is_tuple else (layout.unflatten(y),)
            adj = layout.unflatten(a) if layout.is_tuple else (layout.unflatten(a),)
            grads = tuple(p.view(s) for p, s in zip(g.split(param_sizes), param_shapes))
            return torch.as_tensor(user((z.new_zeros(()).real, *ys, *adj, *grads)))

        return custom
    if spec.state_norm is None:
        return SegmentedRMSNorm(
            [*layout.sizes, *layout.sizes, *param_sizes],
            include=[True] * (2 * len(layout.sizes)) + [not seminorm] * len(param_sizes),
        )
    state_norm, params_norm = spec.state_norm, SegmentedRMSNorm(param_sizes or [0])

    def with_state_norm(z: torch.Tensor) -> torch.Tensor:
        parts = [torch.as_tensor(state_norm(z[:n])), torch.as_tensor(state_norm(z[n : 2 * n]))]
        if param_sizes and not seminorm:
            parts.append(params_norm(z[2 * n :]))
        return torch.stack([p.to(z.real.dtype).reshape(()) for p in parts]).max()

    return with_state_norm


def _augmented_tolerance(value, n: int, n_params: int):
    """Per-component tolerances of the state extended to ``[y, a, g]`` (``g`` gets the tightest)."""
    if not isinstance(value, torch.Tensor):
        return value
    return torch.cat([value, value, value.min().expand(n_params)])


def _report_backward_failure(spec: _Spec, result, t_from: float, t_to: float) -> None:
    """Mark the forward solve's :class:`Solution` with the backward solve's failure."""
    for solution in spec.outcome.get("solutions", ()):
        if solution.status == Status.SUCCESS:
            solution.status = result.status
            solution.message = (f"backward (adjoint) solve from t={t_from:.6g} to t={t_to:.6g} failed, so the "
                                f"gradients are NaN: {result.message}")


class _AdjointSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: _Spec, y0, t, *params):
        with torch.no_grad():
            steps = [] if spec.interpolate else None
            # Detached: a view of y0 made under no_grad would still report requires_grad, and a field
            # that differentiates itself (a CNF's trace, under enable_grad) would then find its
            # output disconnected from the state it was given.
            run = spec.forward.run(VectorField(spec.f, spec.layout, t.dtype), y0.detach(), spec.stats,
                                   hooks=spec.hooks, event=spec.event, steps=steps)
        spec.outcome["run"] = run
        spec.outcome["trajectory"] = DenseOutput(steps, spec.layout, t.dtype) if steps else None
        ctx.spec = spec
        ctx.save_for_backward(t, run.ys, *params)
        return run.ys

    @staticmethod
    def backward(ctx, grad_ys):
        spec: _Spec = ctx.spec
        f, layout, backward, stats = spec.f, spec.layout, spec.backward, spec.stats
        t, ys, *params = ctx.saved_tensors
        params = tuple(params)
        n = layout.numel
        run = spec.outcome["run"]
        times = list(backward.times) if run.event_t is None else [backward.times[0], run.event_t]
        param_sizes = [p.numel() for p in params]
        # A copy: backward() may run more than once (retain_graph), the settings must not compound.
        backward = dataclasses.replace(
            backward, norm=_augmented_norm(spec, [p.shape for p in params]),
            rtol=_augmented_tolerance(backward.rtol, n, sum(param_sizes)),
            atol=_augmented_tolerance(backward.atol, n, sum(param_sizes)),
        )
        dynamics = _AdjointDynamics(f, layout, params, spec.outcome.get("trajectory"))
        augmented = StateLayout((torch.Size([2 * n + sum(param_sizes)]),), False, ys.dtype, ys.device)
        field = VectorField(dynamics, augmented, t.dtype)
        backward_stats = SolveStats()
        # After a failure (throw=False) the rows past the last state reached are NaN constants; as
        # with backprop they take no gradient, and the backward solve starts at the last one reached.
        last = len(times) - 1
        if run.status != "success":
            last = int(torch.isfinite(ys).all(dim=1).nonzero().max())
        with torch.no_grad():
            a = grad_ys[last]
            g = ys.new_zeros(sum(param_sizes))
            for i in range(last, 0, -1):
                if times[i] == times[i - 1]:  # an event at the start: nothing to integrate
                    a = a + grad_ys[i - 1]
                    continue
                z0 = torch.cat([ys[i], a, g])
                result = backward.run(field, z0, backward_stats, times=[times[i], times[i - 1]],
                                      hooks=spec.backward_hooks)
                if result.status != Status.SUCCESS:  # throw=False: say so on the solution, NaN gradients
                    _report_backward_failure(spec, result, times[i], times[i - 1])
                    a, g = torch.full_like(a, math.nan), torch.full_like(g, math.nan)
                    break
                zs = result.ys
                a = zs[-1, n : 2 * n] + grad_ys[i - 1]
                g = zs[-1, 2 * n :]
            # y(t0) = y0 whatever t0 is, so only the adjoint carried back from later times moves with t0.
            a_flowed = a - grad_ys[0]
            grad_t = None
            if ctx.needs_input_grad[2]:
                user = VectorField(f, layout, t.dtype)
                # Detached for the same reason as in forward: a self-differentiating field needs a leaf state.
                grad_t = time_gradients(user, times, ys.detach(), grad_ys, a_flowed, last, t.dtype)
                if run.event_t is not None:
                    grad_t = grad_t * torch.tensor([1.0, 0.0], dtype=grad_t.dtype)  # t[1] only set the direction
                backward_stats.nfe += user.nfe
        stats.nfe_backward += backward_stats.nfe
        stats.steps_backward += backward_stats.steps
        for key, value in backward_stats.extra.items():
            stats.extra["backward_" + key] = value
        grad_params = list(g.split(param_sizes)) if params else []
        # A real parameter of a complex-valued field has a real gradient (its imaginary part is zero).
        grad_params = [(gp.real if gp.is_complex() and not p.is_complex() else gp).view_as(p)
                       for gp, p in zip(grad_params, params)]
        return (None, a, grad_t, *grad_params)
