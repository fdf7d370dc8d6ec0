"""Per-sample stepping: each sample of a batch with its own time, step size, accept/reject and stats.

``solve(f, y0, t, per_sample=True)`` treats the first dimension of ``y0`` as a batch of
independent problems (torchode's design). The loop state is a set of tensors of shape
``(batch,)`` — time, step, controller memory, next output index, counters — and one running
mask: every step evaluates ``f`` on the whole batch (``f`` gets ``t`` of shape ``(batch,)``),
each sample accepts or rejects its own step, and samples that have reached their last output
time stop changing. A batch-coupled solve must take the smallest step any sample needs at every
moment; here a sample in a quiet phase takes long steps while another resolves a fast one, so
the number of batched evaluations is set by the hardest sample, not by the union of their
difficulties.

Each sample follows exactly the arithmetic of a solve of that sample alone with the same method
and options (same initial step rule, same PI(D) controller, same dense output), so its steps
and values equal the single solve's (tested to 1e-10 in float64). Times and step sizes are kept
in float64 whatever the state's dtype, as the single solve keeps them in Python floats.

Scope: explicit Runge–Kutta methods with an embedded error estimate, single-tensor states,
``gradient="backprop"`` (every update is out of place, so autograd differentiates it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .controller import PIController
from .errors import InvalidInputError, MaxStepsExceededError, NonFiniteError, StepSizeUnderflowError
from .methods import Method
from .runge_kutta import RungeKutta
from .solution import SolveStats, Status

_MAX_NON_FINITE_RETRIES = 12  # as the single loop: non-finite stages before f is blamed
_FAILURES = {MaxStepsExceededError: Status.MAX_STEPS_EXCEEDED, StepSizeUnderflowError: Status.STEP_SIZE_UNDERFLOW,
             NonFiniteError: Status.NON_FINITE}


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square of each row."""
    return torch.linalg.vector_norm(x, dim=1) / math.sqrt(x.shape[1])


def check_method(method: Method, options: dict) -> None:
    """Refuse what per-sample stepping does not cover yet, saying what does."""
    solver = method.make_solver(options, 1.0, 1.0)
    if not isinstance(solver, RungeKutta) or not solver.adaptive:
        raise InvalidInputError(
            f"per_sample=True steps adaptive explicit Runge–Kutta methods (dopri5, tsit5, bosh3, dopri8, …); "
            f"method {method.name!r} is not one")
    fixed = [k for k in ("step_size", "grid_constructor", "step_t", "jump_t", "perturb", "norm") if k in options]
    if fixed:
        raise InvalidInputError(f"per_sample=True does not take option(s) {', '.join(fixed)} yet")


def solve_per_sample(f: Callable, y0: torch.Tensor, t: torch.Tensor, method: Method, options: dict,
                     controller: PIController, *, max_steps: int, max_nfe: int, throw: bool
                     ) -> tuple[torch.Tensor, SolveStats, Status, str]:
    """Integrate each row of ``y0`` (shape ``(batch, …)``) through its output times.

    ``t`` is ``(T,)`` (the same times for every sample) or ``(batch, T)``. Returns the states as
    ``(T, batch, …)``, the stats (``nfe`` counts batched evaluations; ``per_sample`` holds each
    sample's own counters) and the status.
    """
    if y0.ndim < 1 or y0.shape[0] == 0:
        raise InvalidInputError("per_sample=True needs y0 with a leading batch dimension of at least one sample")
    batch, shape = y0.shape[0], y0.shape[1:]
    times = _sample_times(t, batch, y0.device)
    T = times.shape[1]
    direction = torch.sign(times[:, -1] - times[:, 0])
    direction = torch.where(direction == 0, torch.ones_like(direction), direction)
    solver: RungeKutta = method.make_solver(options, controller.rtol, controller.atol)
    y = y0.reshape(batch, -1)
    co = solver.coefficients(y)
    c = torch.tensor(solver._c, dtype=torch.float64, device=y.device)
    k = float(solver.error_order)
    atol = torch.as_tensor(controller.atol, dtype=y.real.dtype, device=y.device).reshape(-1)
    rtol = torch.as_tensor(controller.rtol, dtype=y.real.dtype, device=y.device).reshape(-1)
    stats = SolveStats(method=method.name)

    def field(tt: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        stats.nfe += 1
        out = f(tt.to(t.dtype), yy.view(batch, *shape))
        if not isinstance(out, torch.Tensor) or out.shape != y0.shape:
            raise InvalidInputError(
                f"with per_sample=True f(t, y) must return a tensor of y's shape {tuple(y0.shape)} (t has shape "
                f"({batch},)), got {getattr(out, 'shape', type(out).__name__)}")
        return out.reshape(batch, -1)

    t_now = times[:, 0].clone()
    k0 = field(t_now, y)
    h = _initial_step(field, controller, t_now, y, k0, direction, k)
    previous = torch.ones(batch, dtype=torch.float64, device=y.device)
    earlier = torch.ones_like(previous)
    index = torch.ones(batch, dtype=torch.long, device=y.device)  # next output row per sample
    rows: list[torch.Tensor] = [y] + [torch.full_like(y, math.nan) for _ in range(T - 1)]
    accepted = torch.zeros(batch, dtype=torch.long, device=y.device)
    rejected = torch.zeros_like(accepted)
    evaluations = torch.full_like(accepted, 2)
    non_finite = torch.zeros_like(accepted)
    failed: dict[int, tuple[type, str]] = {}
    running = index < T
    nfe_start = stats.nfe
    while bool(running.any()):
        if stats.nfe - nfe_start > max_nfe:
            _fail(failed, running, MaxStepsExceededError, f"used more than max_nfe={max_nfe} batched evaluations")
            break
        steps_taken = accepted + rejected
        over = running & (steps_taken >= max_steps)
        tiny = running & (h.abs() <= 8 * _ulp(torch.maximum(t_now.abs(), (t_now + h).abs())))
        # An underflow approached through non-finite rejections is f's fault, as in the single loop.
        for mask, error, why in ((over, MaxStepsExceededError, f"reached max_num_steps={max_steps}"),
                                 (tiny & (non_finite > 0), NonFiniteError,
                                  "f returns non-finite values just past here; the step size underflowed approaching"),
                                 (tiny & (non_finite == 0), StepSizeUnderflowError, "the step size underflowed")):
            if bool(mask.any()):
                _fail(failed, mask, error, why, t_now)
                running = running & ~mask
        if not bool(running.any()):
            break
        # One step of every sample, with its own h.
        hy = h.to(y.dtype)[:, None]
        stages = [k0]
        for i in range(1, co.stages):
            increment = sum(a * stages[j] for j, a in solver._a[i])  # the tableau's nonzero a_ij, as floats
            stages.append(field(t_now + c[i] * h, y + hy * increment))
        evaluations = evaluations + running.long() * (co.stages - 1)
        K = torch.stack(stages)  # stages × batch × n
        y1 = y + hy * torch.einsum("s,sbn->bn", co.b, K)
        with torch.no_grad():
            error = torch.einsum("s,sbn->bn", co.e, K.detach())
            scale = torch.addcmul(atol, torch.maximum(y.detach().abs(), y1.detach().abs()), rtol)
            ratio = h.abs() * _rms(error / scale).to(torch.float64)
        finite = torch.isfinite(ratio)
        accept = running & finite & ((ratio <= 1.0) | (h.abs() <= controller.min_step))
        h_next = _next_step(controller, h, ratio, accept, previous, earlier, k)
        h_next = torch.where(finite, h_next, h * controller.dfactor)
        non_finite = torch.where(running & ~finite, non_finite + 1, torch.where(running, 0, non_finite))
        blown = non_finite > _MAX_NON_FINITE_RETRIES
        if bool(blown.any()):
            _fail(failed, blown & running, NonFiniteError, "f returned non-finite values even with the step shrunk",
                  t_now)
            running = running & ~blown
            accept = accept & ~blown
        t_next = t_now + h
        # Dense output of every output time inside an accepted step.
        while True:
            target = times.gather(1, index.clamp(max=T - 1)[:, None])[:, 0]
            inside = accept & (index < T) & (direction * (target - t_next) <= 0)
            if not bool(inside.any()):
                break
            theta = (target - t_now) / h
            at = _interpolate(co, y, y1, K, hy, theta)
            for row in torch.unique(index[inside]).tolist():
                chosen = (inside & (index == row))[:, None]
                rows[row] = torch.where(chosen, at, rows[row])
            index = index + inside.long()
        a = accept[:, None]
        y = torch.where(a, y1, y)
        k0 = torch.where(a, K[-1], k0)
        t_now = torch.where(accept, t_next, t_now)
        previous, earlier = (torch.where(accept, ratio.clamp(1e-10, 1.0), previous),
                             torch.where(accept, previous, earlier))
        h = torch.where(running, h_next, h)
        accepted = accepted + accept.long()
        rejected = rejected + (running & ~accept).long()
        running = running & (index < T)
    stats.steps_accepted = int(accepted.sum())
    stats.steps_rejected = int(rejected.sum())
    stats.per_sample = {"steps_accepted": accepted, "steps_rejected": rejected, "nfe": evaluations}
    ys = torch.stack(rows).reshape(T, batch, *shape)
    if not failed:
        return ys, stats, Status.SUCCESS, ""
    first = min(failed)
    error, why = failed[first]
    message = (f"{len(failed)} of {batch} samples failed; sample {first}: {why}; its rows past the last time "
               "reached are NaN")
    if throw:
        raise error(message)
    return ys, stats, _FAILURES[error], message


def _sample_times(t: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
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


def _ulp(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, math.inf)) - x


def _initial_step(field, ctl: PIController, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor,
                  direction: torch.Tensor, order: float) -> torch.Tensor:
    """Hairer, Nørsett & Wanner's initial step (§II.4) per sample, as the single solve computes it."""
    if ctl.first_step is not None:
        return direction * min(max(ctl.first_step, ctl.min_step), ctl.max_step)
    with torch.no_grad():
        y0d, f0d = y0.detach(), f0.detach()
        atol = torch.as_tensor(ctl.atol, dtype=y0.real.dtype, device=y0.device).reshape(-1)
        scale = torch.addcmul(atol, y0d.abs(), torch.as_tensor(ctl.rtol, dtype=y0.real.dtype,
                                                                 device=y0.device).reshape(-1))
        d0, d1 = _rms(y0d / scale).double(), _rms(f0d / scale).double()
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.where(h0 > 0, h0, torch.full_like(h0, 1e-12))
        step = (direction * h0)
        f1 = field(t0 + step, y0d + step.to(y0.dtype)[:, None] * f0d)
        d2 = _rms((f1 - f0d) / scale).double() / h0
        flat = (d1 <= 1e-15) & (d2 <= 1e-15)
        h1 = torch.where(flat, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / torch.maximum(d1, d2)) ** (1.0 / order))
        h = torch.minimum(100 * h0, h1)
        h = torch.where(torch.isfinite(h), h, torch.full_like(h, 1e-6))
        return direction * h.clamp(min=ctl.min_step, max=ctl.max_step)


def _next_step(ctl: PIController, h: torch.Tensor, ratio: torch.Tensor, accept: torch.Tensor,
               previous: torch.Tensor, earlier: torch.Tensor, order: float) -> torch.Tensor:
    """The PI(D) controller's next step per sample (the formula of ``PIController.adapt``)."""
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


def _interpolate(co, y0: torch.Tensor, y1: torch.Tensor, K: torch.Tensor, hy: torch.Tensor,
                 theta: torch.Tensor) -> torch.Tensor:
    """The step's dense output at ``θ`` per sample (``θ = 1`` is the step's end itself)."""
    th = theta.to(y0.dtype)
    weights = (th[:, None] ** co.powers) @ co.dense_t  # batch × stages
    at = y0 + hy * torch.einsum("bs,sbn->bn", weights, K)
    return torch.where((theta == 1.0)[:, None], y1, at)


def _fail(failed: dict, mask: torch.Tensor, error: type, why: str, t_now: torch.Tensor | None = None) -> None:
    for b in mask.nonzero().flatten().tolist():
        if b not in failed:
            where = "" if t_now is None else f" at t={float(t_now[b]):.6g}"
            failed[b] = (error, why + where)
