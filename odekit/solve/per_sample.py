from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import per_sample_adjoint, tensor_loop
from .errors import InvalidInputError
from .methods import Method
from .per_sample_adjoint import Settings
from .runge_kutta import RungeKutta
from .solution import SolveStats, Status
from .state import State, StateLayout

_STATUS = {tensor_loop.MAX_STEPS: Status.MAX_STEPS_EXCEEDED, tensor_loop.MAX_NFE: Status.MAX_STEPS_EXCEEDED,
           tensor_loop.UNDERFLOW: Status.STEP_SIZE_UNDERFLOW, tensor_loop.NON_FINITE_UNDERFLOW: Status.NON_FINITE,
           tensor_loop.NON_FINITE: Status.NON_FINITE}


def on_tensor_loop(method: Method, options: dict) -> bool:
    """Whether the tensor loop steps this method per sample: an adaptive explicit Runge–Kutta method
    without fixed-grid, breakpoint or norm options (every other method runs in lockstep,
    :mod:`~odekit.solve.lockstep`)."""
    solver = method.make_solver(options, 1.0, 1.0)
    fixed = ("step_size", "grid_constructor", "step_t", "jump_t", "perturb", "norm")
    return isinstance(solver, RungeKutta) and solver.adaptive and not any(k in options for k in fixed)


def sample_layout(y0: State) -> tuple[StateLayout, int]:
    """The layout of one sample of ``y0`` (a tensor or tuple of tensors sharing a leading batch size)."""
    parts = tuple(y0) if isinstance(y0, (tuple, list)) else (y0,)
    if not parts or not all(isinstance(p, torch.Tensor) and p.is_floating_point() for p in parts):
        raise InvalidInputError("per_sample=True needs y0 to be a real floating tensor of shape (batch, ...) or a "
                                "tuple of them")
    if any(p.ndim < 1 for p in parts) or len({p.shape[0] for p in parts}) != 1 or parts[0].shape[0] == 0:
        raise InvalidInputError("per_sample=True needs y0 with one leading batch dimension of at least one sample, "
                                f"the same in every tensor; got shapes {[tuple(p.shape) for p in parts]}")
    layout = StateLayout.of(tuple(p[0] for p in parts) if isinstance(y0, (tuple, list)) else y0[0])
    return layout, parts[0].shape[0]


def solve_per_sample(f: Callable, y0: State, t: torch.Tensor, forward: Settings, *, throw: bool,
                     compile: bool = False, gradient: str = "backprop", backward: Settings | None = None,
                     params: Sequence[torch.Tensor] = ()) -> tuple[State, SolveStats, Status, str]:
    """Integrate each sample of ``y0`` (leading dimension ``batch``) through its output times.

    ``t`` is ``(T,)`` (the same times for every sample) or ``(batch, T)``. Returns the states as
    ``(T, batch, …)`` (a tuple of such for tuple states), the stats (``nfe`` counts batched
    evaluations; ``per_sample`` holds each sample's own counters) and the status. ``gradient``:
    ``"backprop"`` through the steps, ``"checkpoint"`` (the same gradient, each step re-taken in the
    backward pass instead of kept), or ``"adjoint"`` (:mod:`~odekit.solve.per_sample_adjoint`,
    with ``backward`` settings and gradients to ``params``).
    """
    layout, batch = sample_layout(y0)
    parts = tuple(y0) if layout.is_tuple else (y0,)
    flat = torch.cat([p.reshape(batch, -1) for p in parts], dim=1)
    times = sample_times(t, batch, flat.device)
    field = CheckedField(f, layout, batch)
    stats = SolveStats(method=forward.method.name)
    if gradient == "adjoint":
        rows, carry, nfe = per_sample_adjoint.solve(field, flat, times, layout, t.dtype, forward, backward, params,
                                                    stats, compile)
    else:
        s = tensor_loop.stepping(field, layout, False, t.dtype, times, forward.solver(), forward.controller,
                                 forward.max_steps)
        carry, nfe = tensor_loop.run(s, flat, compile=compile, max_nfe=forward.max_nfe,
                                     checkpoint=gradient == "checkpoint")
        rows = carry.rows
    stats.nfe, stats.steps_accepted, stats.steps_rejected = nfe, int(carry.accepted.sum()), int(carry.rejected.sum())
    stats.per_sample = {"steps_accepted": carry.accepted, "steps_rejected": carry.rejected,
                        "nfe": carry.evaluations}
    T = times.shape[1]
    ys = tuple(p.reshape(T, batch, *shape) for p, shape in zip(rows.split(layout.sizes, dim=2), layout.shapes))
    ys = ys if layout.is_tuple else ys[0]
    failed = carry.failure.nonzero().flatten().tolist()
    if not failed:
        return ys, stats, Status.SUCCESS, ""
    first = failed[0]
    code = int(carry.failure[first])
    error, why = tensor_loop.FAILURES[code]
    limit = {tensor_loop.MAX_STEPS: f"={forward.max_steps}", tensor_loop.MAX_NFE: f" ({forward.max_nfe})"}.get(code, "")
    message = (f"{len(failed)} of {batch} samples failed; sample {first}: {why}{limit} at "
               f"t={float(carry.failed_at[first]):.6g}; its rows past the last time reached are NaN")
    if throw:
        raise error(message)
    return ys, stats, _STATUS[code], message


class CheckedField:
    """The user's field, its first output checked against the batch's structure (later calls are not
    checked: under ``compile=True`` they are traced once)."""

    def __init__(self, f: Callable, layout: StateLayout, batch: int) -> None:
        self.f, self.layout, self.batch, self.checked = f, layout, batch, False

    def __call__(self, t: torch.Tensor, y: State) -> State:
        out = self.f(t, y)
        if not self.checked:
            want = tuple((self.batch, *shape) for shape in self.layout.shapes)
            got = tuple(out) if isinstance(out, (tuple, list)) else (out,)
            if (len(got) != len(want) or isinstance(out, (tuple, list)) != self.layout.is_tuple
                    or not all(isinstance(o, torch.Tensor) and tuple(o.shape) == w for o, w in zip(got, want))):
                shown = [tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__ for o in got]
                raise InvalidInputError(
                    f"with per_sample=True f(t, y) must return the structure of y, shapes {list(want)} (t has "
                    f"shape ({self.batch},)), got {shown}")
            self.checked = True
        return out


def sample_times(t: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Output times as ``(batch, T)`` float64, checked strictly monotone per sample."""
    if t.ndim == 1:
        times = t.detach().to(torch.float64).expand(batch, -1)
    elif t.ndim == 2 and t.shape[0] == batch:
        times = t.detach().to(torch.float64)
    else:
        raise InvalidInputError(f"with per_sample=True, t must have shape (T,) or (batch={batch}, T); "
                                f"got {tuple(t.shape)}")
    if times.shape[1] < 1 or not bool(torch.isfinite(times).all()):
        raise InvalidInputError("t must hold at least one finite time per sample")
    if times.shape[1] > 1:
        steps = torch.diff(times, dim=1)
        monotone = (steps > 0).all(dim=1) | (steps < 0).all(dim=1)
        if not bool(monotone.all()):
            bad = int((~monotone).nonzero()[0])
            raise InvalidInputError(f"the output times of sample {bad} are not strictly monotone: "
                                    f"{times[bad].tolist()[:6]}")
    return times.to(device).contiguous()
