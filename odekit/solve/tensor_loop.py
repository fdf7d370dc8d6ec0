"""The step loop with its whole state in tensors: per-sample stepping and the compiled solve.

The host loop of :mod:`~odekit.solve.integrate` keeps times and step sizes in Python floats,
which costs nothing on a CPU but one host synchronisation per step on a GPU, and it cannot be
compiled. Here one step of an adaptive explicit Runge–Kutta method — the stages, the error
norm, the PI(D) controller, accept/reject, dense output at the output times inside the step,
the failure checks — is a pure function :func:`advance` from one :class:`Carry` of tensors to the
next (torchode's design). Each row of the carry is an independent problem with its own time,
step, controller memory and counters, and a running mask: rows that have finished (or failed)
stop changing. The batch-coupled solve is the same loop with one row holding the whole flat
state.

Because :func:`advance` is a function of tensors only, ``torch.compile`` turns it — the user's
``f`` inlined — into one graph (:func:`compiled_advance`), and the host only asks whether any row
is still running every :func:`check_interval` steps (every step on a CPU, where asking is free).

Each row follows the arithmetic of the host loop (the same initial-step rule, PI(D) law, error
norm and dense output), so its steps and values equal a single solve's to rounding (tested to
1e-10 in float64). One difference: at most :data:`WINDOW` output times are written per step, so a
step that would pass more ends on the last of them (with a handful of output times per step,
never; with hundreds of output times inside one step, a few extra steps).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.utils.checkpoint

from .controller import PIController
from .errors import MaxStepsExceededError, NonFiniteError, StepSizeUnderflowError
from .norms import Norm, SegmentedRMSNorm, rms_norm
from .runge_kutta import RungeKutta
from .state import StateLayout

WINDOW = 8  # output times written per step at most (see the module docstring)
_MAX_NON_FINITE_RETRIES = 12  # as the host loop: non-finite stages before f is blamed

# Failure codes per row (0: none), and what each means.
MAX_STEPS, NON_FINITE_UNDERFLOW, UNDERFLOW, NON_FINITE, MAX_NFE = 1, 2, 3, 4, 5
FAILURES: dict[int, tuple[type, str]] = {
    MAX_STEPS: (MaxStepsExceededError, "reached max_num_steps"),
    NON_FINITE_UNDERFLOW: (NonFiniteError, ("f returns non-finite values just past here; the step size "
                                            "underflowed approaching")),
    UNDERFLOW: (StepSizeUnderflowError, "the step size underflowed"),
    NON_FINITE: (NonFiniteError, "f returned non-finite values even with the step shrunk"),
    MAX_NFE: (MaxStepsExceededError, "the solve used more than max_nfe batched evaluations"),
}


class CompileWarning(UserWarning):
    """``compile=True`` could not compile the step and the solve ran eagerly (the message says why)."""


class Carry(NamedTuple):
    """The loop state, one entry per row: float64 times and steps, counters, the running mask."""

    t: torch.Tensor  # (B,) float64
    h: torch.Tensor  # (B,) float64, the next step to try
    y: torch.Tensor  # (B, n)
    k0: torch.Tensor  # (B, n): f at (t, y), the next step's first stage
    previous: torch.Tensor  # (B,) float64: the last accepted error ratio (PI memory)
    earlier: torch.Tensor  # (B,) float64: the one before
    index: torch.Tensor  # (B,) long: the next output row
    rows: torch.Tensor  # (T, B, n): the outputs so far (NaN where not reached)
    accepted: torch.Tensor  # (B,) long
    rejected: torch.Tensor  # (B,) long
    evaluations: torch.Tensor  # (B,) long: evaluations while the row was running
    non_finite: torch.Tensor  # (B,) long: consecutive non-finite rejections
    running: torch.Tensor  # (B,) bool
    failure: torch.Tensor  # (B,) long: a failure code, 0 while fine
    failed_at: torch.Tensor  # (B,) float64: the time of the failure
    total: torch.Tensor  # (m,): the quadrature's running sum over accepted steps (empty without one)


@dataclass(frozen=True, eq=False)
class Stepping:
    """What stays fixed during one solve: the field, the tableau, the tolerances, the output times.

    ``f`` is the user's field. With ``coupled`` the carry has one row holding the whole flat state
    and ``f`` gets a 0-d time and the state in ``layout``'s structure; otherwise every row is a
    sample, ``f`` gets ``t`` of shape ``(B,)`` and the batch in ``layout``'s structure with a
    leading batch dimension (``layout`` describes one sample).
    """

    f: Callable
    layout: StateLayout
    coupled: bool
    t_dtype: torch.dtype
    times: torch.Tensor  # (B, T) float64
    direction: torch.Tensor  # (B,) float64, ±1
    solver: RungeKutta
    b: torch.Tensor
    e: torch.Tensor
    dense_t: torch.Tensor
    powers: torch.Tensor
    rtol: torch.Tensor  # (1,) or (n,)
    atol: torch.Tensor
    controller: PIController
    max_steps: int
    segments: tuple[tuple[int, bool], ...]  # the error norm's (size, measured) parts; () is the whole row
    # quadrature(stage_times, stage_inputs, stages, weights) -> (m,): an integral over the accepted
    # steps up to the last output time, summed over the rows, added to Carry.total; weights[i, b] =
    # h_b·b_i for an accepted step of row b (the dense-output weights in a step that passes the last
    # time), else 0: the per-sample adjoint's parameter gradient, whose rows cannot be told apart
    # once summed. `stages` are the field's outputs as it returned them (with any graph they have).
    quadrature: Callable[[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor],
                         torch.Tensor] | None = None
    quadrature_size: int = 0

    @property
    def window(self) -> int:
        return max(1, min(WINDOW, self.times.shape[1] - 1))


def norm_segments(norm: Norm) -> tuple[tuple[int, bool], ...] | None:
    """The engine's error norms as row-wise segments (see :class:`Stepping`); ``None`` for a user's norm."""
    if norm is rms_norm:
        return ()
    if isinstance(norm, SegmentedRMSNorm):
        return tuple((size, bool(w > 0)) for size, w in zip(norm.sizes, norm.weights.tolist()))
    return None


def stepping(f: Callable, layout: StateLayout, coupled: bool, t_dtype: torch.dtype, times: torch.Tensor,
             solver: RungeKutta, controller: PIController, max_steps: int,
             segments: tuple[tuple[int, bool], ...] | None = None, quadrature=None, quadrature_size: int = 0
             ) -> Stepping:
    """The fixed part of a solve, with the tableau and the tolerances as tensors on the state's device.

    ``segments`` default to the components of ``layout`` (RMS for one, the largest component RMS
    for a tuple, as :func:`~odekit.solve.norms.norm_for`).
    """
    if segments is None:
        segments = () if len(layout.sizes) == 1 else tuple((size, True) for size in layout.sizes)
    like = torch.empty(0, dtype=layout.dtype, device=layout.device)
    co = solver.coefficients(like)
    direction = torch.sign(times[:, -1] - times[:, 0])
    direction = torch.where(direction == 0, torch.ones_like(direction), direction)

    def tolerance(value) -> torch.Tensor:
        return torch.as_tensor(value, dtype=layout.real_dtype, device=layout.device).reshape(-1)

    return Stepping(f, layout, coupled, t_dtype, times, direction, solver, co.b, co.e, co.dense_t, co.powers,
                    tolerance(controller.rtol), tolerance(controller.atol), controller, max_steps, segments,
                    quadrature, quadrature_size)


def evaluate(s: Stepping, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``f`` on every row: ``t`` is ``(B,)`` float64, ``y`` is ``(B, n)``; returns ``(B, n)``."""
    layout = s.layout
    if s.coupled:
        out = s.f(t[0].to(s.t_dtype), layout.unflatten(y[0]))
        return (out if not layout.is_tuple else torch.cat([o.reshape(-1) for o in out])).reshape(1, -1)
    batch = y.shape[0]
    if layout.is_tuple:
        parts = tuple(p.reshape(batch, *shape) for p, shape in zip(y.split(layout.sizes, dim=1), layout.shapes))
        out = s.f(t.to(s.t_dtype), parts)
        return torch.cat([o.reshape(batch, -1) for o in out], dim=1)
    out = s.f(t.to(s.t_dtype), y.view(batch, *layout.shapes[0]))
    # Not a view when already flat: a view made without autograd recording loses the graph a field
    # may have kept (the per-sample adjoint's quadrature differentiates the stages afterwards).
    return out if out.shape == y.shape else out.reshape(batch, -1)


def row_norm(s: Stepping, x: torch.Tensor) -> torch.Tensor:
    """The error norm of each row: RMS, or the largest RMS of the measured segments (torchdiffeq's
    mixed norm; the adjoint's seminorm leaves the parameter segments unmeasured)."""
    if not s.segments:
        return torch.linalg.vector_norm(x, dim=1) / math.sqrt(x.shape[1])
    parts = [torch.linalg.vector_norm(p, dim=1) / math.sqrt(size)
             for p, (size, measured) in zip(x.split([size for size, _ in s.segments], dim=1), s.segments)
             if measured and size]
    return torch.stack(parts).amax(dim=0) if parts else x.new_zeros(x.shape[0]).real


def start(s: Stepping, y0: torch.Tensor) -> tuple[Carry, int]:
    """The carry at the first output time, and the evaluations that cost (``f(t0, y0)`` and the
    initial step rule's one)."""
    batch = y0.shape[0]
    t0 = s.times[:, 0].clone()
    k0 = evaluate(s, t0, y0)
    h, evaluations = _initial_step(s, t0, y0, k0)
    count = torch.full((batch,), evaluations, dtype=torch.long, device=y0.device)
    zeros = torch.zeros_like(count)
    T = s.times.shape[1]
    rows = torch.cat([y0[None], y0.new_full((T - 1, *y0.shape), math.nan)])
    ones = torch.ones(batch, dtype=torch.float64, device=y0.device)
    carry = Carry(t0, h, y0, k0, ones, ones, torch.ones_like(count), rows, zeros, zeros, count, zeros,
                  torch.ones_like(count) < T, zeros, torch.zeros_like(t0), y0.new_zeros(s.quadrature_size))
    # In standard strides: the compiled step is specialised on them, and a view (t0 is a column of
    # the times) would make the second step recompile.
    return Carry(*(torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x) for x in carry)), evaluations


def _initial_step(s: Stepping, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Hairer, Nørsett & Wanner's initial step (§II.4) per row, as :meth:`PIController.init` computes it."""
    ctl = s.controller
    if ctl.first_step is not None:
        return s.direction * min(max(ctl.first_step, ctl.min_step), ctl.max_step), 1
    with torch.no_grad():
        y0d, f0d = y0.detach(), f0.detach()
        scale = torch.addcmul(s.atol, y0d.abs(), s.rtol)
        d0, d1 = row_norm(s, y0d / scale).double(), row_norm(s, f0d / scale).double()
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.where(h0 > 0, h0, torch.full_like(h0, 1e-12))
        step = s.direction * h0
        f1 = evaluate(s, t0 + step, y0d + step.to(y0.dtype)[:, None] * f0d)
        d2 = row_norm(s, (f1 - f0d) / scale).double() / h0
        flat = (d1 <= 1e-15) & (d2 <= 1e-15)
        order = float(s.solver.error_order)
        h1 = torch.where(flat, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / torch.maximum(d1, d2)) ** (1.0 / order))
        h = torch.minimum(100 * h0, h1)
        h = torch.where(torch.isfinite(h), h, torch.full_like(h, 1e-6))
        return s.direction * h.clamp(min=ctl.min_step, max=ctl.max_step), 2


def _ulp(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, math.inf)) - x


def _next_step(ctl: PIController, h: torch.Tensor, ratio: torch.Tensor, accept: torch.Tensor,
               previous: torch.Tensor, earlier: torch.Tensor, order: float) -> torch.Tensor:
    """The PI(D) controller's next step per row (the formula of :meth:`PIController.adapt`)."""
    gain = ctl.pcoeff + ctl.icoeff + ctl.dcoeff
    factor = ctl.safety * ratio ** (-gain / order)
    if ctl.pcoeff or ctl.dcoeff:
        factor = factor * previous ** ((ctl.pcoeff + 2 * ctl.dcoeff) / order)
    if ctl.dcoeff:
        factor = factor * earlier ** (-ctl.dcoeff / order)
    floor = torch.where(accept, torch.ones_like(factor), torch.full_like(factor, ctl.dfactor))
    factor = torch.clamp(torch.maximum(factor, floor), max=ctl.ifactor)
    factor = torch.where(accept, factor, torch.clamp(factor, max=max(ctl.dfactor, 0.9)))
    factor = torch.where(ratio == 0, torch.full_like(factor, ctl.ifactor), factor)
    return torch.sign(h) * (h * factor).abs().clamp(min=ctl.min_step, max=ctl.max_step)


def _interpolate(s: Stepping, y0: torch.Tensor, y1: torch.Tensor, K: torch.Tensor, hy: torch.Tensor,
                 theta: torch.Tensor) -> torch.Tensor:
    """The step's dense output at ``θ`` per row (``θ = 1`` is the step's end itself)."""
    th = theta.to(y0.dtype)
    weights = (th[:, None] ** s.powers) @ s.dense_t  # B × stages
    at = y0 + hy * torch.einsum("bs,sbn->bn", weights, K)
    return torch.where((theta == 1.0)[:, None], y1, at)


def advance(s: Stepping, carry: Carry) -> Carry:
    """One attempted step of every running row: a pure function of tensors (compilable)."""
    t, h, y, k0, previous, earlier, index, rows, accepted, rejected, evaluations, non_finite, running, failure, \
        failed_at, total = carry
    T = s.times.shape[1]
    ctl = s.controller
    # Failures before the step: the step cap, and a step size that no longer moves t.
    over = running & (accepted + rejected >= s.max_steps)
    tiny = running & (h.abs() <= 8 * _ulp(torch.maximum(t.abs(), (t + h).abs())))
    code = torch.where(over, MAX_STEPS, torch.where(non_finite > 0, NON_FINITE_UNDERFLOW, UNDERFLOW))
    stopped = over | tiny
    failure = torch.where(stopped & (failure == 0), code, failure)
    failed_at = torch.where(stopped, t, failed_at)
    running = running & ~stopped
    # A step passing more than `window` output times ends on the last of them.
    window = s.window
    if window < T - 1:
        last = s.times.gather(1, (index + window - 1).clamp(max=T - 1)[:, None])[:, 0]
        beyond = (index + window < T) & (s.direction * (t + h - last) > 0)
        h = torch.where(beyond, last - t, h)
    hy = h.to(y.dtype)[:, None]
    stages, inputs, stage_times = [k0], [y], [t]
    for i in range(1, len(s.solver._c)):
        increment = sum(a * stages[j] for j, a in s.solver._a[i])  # the tableau's nonzero a_ij
        inputs.append(y + hy * increment)
        stage_times.append(t + s.solver._c[i] * h)
        stages.append(evaluate(s, stage_times[-1], inputs[-1]))
    evaluations = evaluations + running.long() * (len(stages) - 1)
    K = torch.stack(stages)  # stages × B × n
    y1 = y + hy * torch.einsum("s,sbn->bn", s.b, K)
    error = torch.einsum("s,sbn->bn", s.e, K.detach())
    scale = torch.addcmul(s.atol, torch.maximum(y.detach().abs(), y1.detach().abs()), s.rtol)
    ratio = h.abs() * row_norm(s, error / scale).to(torch.float64)
    finite = torch.isfinite(ratio)
    accept = running & finite & ((ratio <= 1.0) | (h.abs() <= ctl.min_step))
    order = float(s.solver.error_order)
    h_next = torch.where(finite, _next_step(ctl, h, ratio, accept, previous, earlier, order), h * ctl.dfactor)
    non_finite = torch.where(running & ~finite, non_finite + 1, torch.where(running, 0, non_finite))
    blown = running & (non_finite > _MAX_NON_FINITE_RETRIES)
    failure = torch.where(blown & (failure == 0), NON_FINITE, failure)
    failed_at = torch.where(blown, t, failed_at)
    running = running & ~blown
    accept = accept & ~blown
    t_next = t + h
    # Dense output of the output times inside an accepted step, one per pass.
    rows_index = torch.arange(y.shape[0], device=y.device)
    for _ in range(window):
        at_row = index.clamp(max=T - 1)
        target = s.times.gather(1, at_row[:, None])[:, 0]
        inside = accept & (index < T) & (s.direction * (target - t_next) <= 0)
        if not torch.compiler.is_compiling() and not bool(inside.any()):
            break  # eagerly, stop at the first pass with nothing to write; a graph takes them all
        at = _interpolate(s, y, y1, K, hy, (target - t) / h)
        rows = rows.index_put((at_row, rows_index), torch.where(inside[:, None], at, rows[at_row, rows_index]))
        index = index + inside.long()
    if s.quadrature is not None:
        # The last step may pass the last output time: integrate only up to it, with the weights
        # of the dense output there (they are b at θ = 1).
        theta = torch.clamp((s.times[:, -1] - t) / h, max=1.0).to(y.dtype)
        weights = ((theta[:, None] ** s.powers) @ s.dense_t).T * (hy[:, 0] * accept)[None]
        total = total + s.quadrature(stage_times, inputs, stages, weights)
    chosen = accept[:, None]
    return Carry(
        torch.where(accept, t_next, t), torch.where(running, h_next, h), torch.where(chosen, y1, y),
        torch.where(chosen, K[-1], k0), torch.where(accept, ratio.clamp(1e-10, 1.0), previous),
        torch.where(accept, previous, earlier), index, rows, accepted + accept.long(),
        rejected + (running & ~accept).long(), evaluations, non_finite, running & (index < T), failure, failed_at,
        total)


_COMPILED: dict[str, Callable] = {}
_DYNAMO_SETTINGS = {
    # The adjoint's backward field takes vector–Jacobian products with torch.autograd.grad, which
    # dynamo traces only when asked to.
    "trace_autograd_ops": True,
    # Every field and shape in a process is one more graph of the one step function: dynamo's
    # default of 8 would send the ninth model eager.
    "recompile_limit": 64,
    "error_on_recompile": False,  # set during a solve after its first step (see run)
}


def compiled_advance() -> Callable[[Stepping, Carry], Carry]:
    """:func:`advance` through ``torch.compile`` (one graph, ``f`` inlined; built once per process).

    Guards are on the shapes, strides, dtypes and devices of the carry and on the identity of ``f``
    and the settings, so repeated solves of one model at one batch size do not recompile. Call it
    inside :func:`_dynamo_settings`.
    """
    if "advance" not in _COMPILED:
        _COMPILED["advance"] = torch.compile(advance, fullgraph=True, dynamic=False)
    return _COMPILED["advance"]


@contextlib.contextmanager
def _dynamo_settings():
    """Dynamo's settings for the compiled step, restored afterwards (set directly: ``config.patch``
    costs about 0.1 ms, more than a small step)."""
    config = torch._dynamo.config
    saved = {name: getattr(config, name) for name in _DYNAMO_SETTINGS}
    for name, value in _DYNAMO_SETTINGS.items():
        setattr(config, name, max(value, saved[name]) if name == "recompile_limit" else value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


def check_interval(device: torch.device) -> int:
    """Steps between the host's checks for running rows: every step on a CPU (the check is a read
    of host memory), every 8 on an accelerator (each check waits for the device)."""
    return 1 if device.type == "cpu" else 8


def run(s: Stepping, y0: torch.Tensor, *, compile: bool, max_nfe: float, checkpoint: bool = False
        ) -> tuple[Carry, int]:
    """Step every row to its last output time (or failure); returns the final carry and the
    number of batched evaluations of ``f``.

    With ``compile`` the step runs through :func:`compiled_advance`; if that cannot be built the
    solve continues eagerly with a :class:`CompileWarning` saying why. With ``checkpoint`` (and
    autograd recording) each step keeps only its input carry and is re-taken during the backward
    pass (``torch.utils.checkpoint``): backprop's gradient without the graph of every step.
    """
    carry, nfe = start(s, y0)
    if not compile:
        return _loop(s, carry, nfe, _checkpointed(advance) if checkpoint else advance, max_nfe)
    with _dynamo_settings():
        step = _CompiledOrEager()
        carry = step(s, carry)
        # Within one solve the shapes stay put: a recompilation now means f changes Python state
        # between calls (a call counter, say), and every step would recompile.
        torch._dynamo.config.error_on_recompile = True
        return _loop(s, carry, nfe + len(s.solver._c) - 1, _checkpointed(step) if checkpoint else step, max_nfe)


class _CompiledOrEager:
    """The compiled step until it fails (it cannot be traced, or it would recompile every step),
    then :func:`advance` with a :class:`CompileWarning` saying why."""

    def __init__(self) -> None:
        self.step = compiled_advance()

    def __call__(self, s: Stepping, carry: Carry) -> Carry:
        if self.step is advance:
            return advance(s, carry)
        try:
            return self.step(s, carry)
        except Exception as err:  # noqa: BLE001 - dynamo's and inductor's errors share no public base
            first_line = str(err).splitlines()[0] if str(err) else ""
            recompiling = isinstance(err, torch._dynamo.exc.RecompileError)
            why = ("f changes Python state between calls, so every step would recompile" if recompiling
                   else f"{type(err).__name__}: {first_line}")
            warnings.warn(f"compile=True: the step could not be compiled ({why}); solving eagerly", CompileWarning,
                          stacklevel=5)
            self.step = advance
            return advance(s, carry)  # the carry is unchanged: the failed call had no effect


def _checkpointed(step: Callable[[Stepping, Carry], Carry]) -> Callable[[Stepping, Carry], Carry]:
    def checkpointed(s: Stepping, carry: Carry) -> Carry:
        if not torch.is_grad_enabled():
            return step(s, carry)
        return torch.utils.checkpoint.checkpoint(step, s, carry, use_reentrant=False)

    return checkpointed


def _loop(s: Stepping, carry: Carry, nfe: int, step: Callable[[Stepping, Carry], Carry],
          max_nfe: float) -> tuple[Carry, int]:
    """Call ``step`` until no row runs, checking every :func:`check_interval` steps."""
    every = check_interval(carry.y.device)
    stages = len(s.solver._c) - 1
    while bool(carry.running.any()):
        if nfe > max_nfe:
            failure = torch.where(carry.running & (carry.failure == 0), MAX_NFE, carry.failure)
            carry = carry._replace(failure=failure, failed_at=torch.where(carry.running, carry.t, carry.failed_at),
                                   running=torch.zeros_like(carry.running))
            break
        for _ in range(every):
            carry = step(s, carry)
        nfe += every * stages
    return carry, nfe
