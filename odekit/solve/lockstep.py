"""Per-sample solves of every method: each sample runs the engine's own solve, in lockstep.

The tensor loop (:mod:`~odekit.solve.tensor_loop`) steps adaptive explicit Runge–Kutta methods
per sample with the whole loop state in tensors. The other methods — the proximal schemes of
chapter 5 with their inner solvers, BDF/NDF, implicit Runge–Kutta, fixed grids — have
data-dependent control inside a step (inner iterations until each stage converges, Newton
restarts, order changes), so here each sample is solved by the very solve a user would run on it
alone, one coroutine (a greenlet) per sample. Whenever every running sample waits for an
evaluation of ``f``, the requests are stacked into one batched call ``f(t, y)`` with ``t`` of
shape ``(batch,)``; a sample that has finished contributes its last point and ignores the output.

So each sample takes exactly the steps, inner iterations and values of its own solve (tested
against solving it alone), every gradient method of that solve applies, and ``f`` sees the whole
batch at every call. The host work per step is a single solve's times the batch size; what is
batched is ``f``. Gradients: backprop and ``gradient="implicit"`` differentiate the batched
calls in one backward pass. The adjoint and the checkpointed gradient solve (or re-take) each
sample's backward pass in turn, outside the lockstep, evaluating ``f`` on a batch padded with
copies of that sample: correct, at ``batch`` times the cost of a solo backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
from greenlet import greenlet

from . import solution
from .errors import SolverError
from .solution import Solution, SolveStats, Status
from .state import State, StateLayout


class _Request(NamedTuple):
    """One sample's wait for ``f(t, y)``, with its autograd mode (greenlets share the thread's)."""

    sample: int
    t: torch.Tensor
    y: State
    grad: bool


def solve_in_lockstep(f: Callable, samples: list[State], times: list[torch.Tensor], layout: StateLayout,
                      solve: Callable[..., Solution]) -> tuple[State, SolveStats, Status, str]:
    """Solve ``solve(field, samples[b], times[b])`` for every sample ``b`` with batched calls of ``f``.

    ``f`` is the user's batched field (``t`` of shape ``(batch,)``, ``y`` with a leading batch
    dimension in ``layout``'s structure, ``layout`` describing one sample); ``solve`` is the
    engine's :func:`~odekit.solve.api.solve` with every setting but the field, the state and the
    times bound. Returns the states as ``(T, batch, …)``, the stats (``nfe`` counts batched calls,
    ``per_sample`` each sample's counters), the status and message of the first failed sample.
    """
    batch = len(samples)
    fields = [_SampleField(f, layout, batch, b) for b in range(batch)]
    workers = [greenlet(functools.partial(solve, fields[b], samples[b], times[b])) for b in range(batch)]
    for field, worker in zip(fields, workers):
        field.worker = worker
    results: list[Solution | None] = [None] * batch
    nfe = 0
    last: list[_Request | None] = [None] * batch
    grad_mode = torch.is_grad_enabled()
    recorders = getattr(solution._active, "stack", None)
    solution._active.stack = []  # each sample's solve publishes its stats; the caller publishes the sum
    try:
        pending = [_resume(workers[b], b, None, grad_mode, results) for b in range(batch)]
        while any(p is not None for p in pending):
            for b, request in enumerate(pending):
                if request is not None:
                    last[b] = request
                elif last[b] is not None and last[b].grad:  # finished: its last point, as a constant
                    last[b] = _Request(b, last[b].t.detach(), _detached(last[b].y), False)
            grad = any(p.grad for p in pending if p is not None)
            out = _evaluate(f, layout, last, grad)
            nfe += 1
            pending = [None if p is None else _resume(workers[p.sample], p.sample, _row(out, p, layout, grad), p.grad,
                                                      results) for p in pending]
    except BaseException:
        for worker in workers:
            if not worker.dead:
                worker.throw()  # GreenletExit: run the sample's cleanup before this error propagates
        raise
    finally:
        torch.set_grad_enabled(grad_mode)
        if recorders is None:
            del solution._active.stack
        else:
            solution._active.stack = recorders
    return _gather(results, layout, nfe)


def _resume(worker: greenlet, b: int, value: Any, grad: bool, results: list) -> _Request | None:
    """Run sample ``b`` until its next request of ``f`` (``None`` once its solve returned)."""
    torch.set_grad_enabled(grad)
    try:
        out = worker.switch() if value is None else worker.switch(value)  # None: start the solve
    except SolverError as err:  # the engine's errors take one message: say which sample failed
        raise type(err)(f"sample {b} of the batch: {err}") from err
    if isinstance(out, _Request):
        return out
    results[b] = out
    return None


def _evaluate(f: Callable, layout: StateLayout, points: list[_Request], grad: bool) -> State:
    """``f`` on the stacked points of every sample (finished ones repeat their last point)."""
    t = torch.stack([p.t for p in points])
    with torch.set_grad_enabled(grad):
        if layout.is_tuple:
            y = tuple(torch.stack([p.y[i] for p in points]) for i in range(len(layout.shapes)))
        else:
            y = torch.stack([p.y for p in points])
        return f(t, y)


def _detached(y: State) -> State:
    return tuple(p.detach() for p in y) if isinstance(y, tuple) else y.detach()


def _row(out: State, request: _Request, layout: StateLayout, batch_grad: bool) -> State:
    """Sample ``b``'s part of a batched output; without a graph if it asked under ``no_grad`` and
    the batched call, for another sample, recorded one."""
    with torch.set_grad_enabled(request.grad):  # the scheduler runs in whatever mode the last sample left
        parts = tuple(o[request.sample] for o in out) if layout.is_tuple else (out[request.sample],)
    if batch_grad and not request.grad:
        parts = tuple(p.detach() for p in parts)
    return parts if layout.is_tuple else parts[0]


class _SampleField:
    """Sample ``b``'s field for its own solve: inside the lockstep, a request to the scheduler;
    outside it (a backward pass re-solving this sample) or inside a transform, ``f`` on a batch of
    copies of the point."""

    def __init__(self, f: Callable, layout: StateLayout, batch: int, b: int) -> None:
        self.f, self.layout, self.batch, self.b = f, layout, batch, b
        self.worker: greenlet | None = None

    def __call__(self, t: torch.Tensor, y: State) -> State:
        # Inside a functorch transform or a forward-AD level (a Jacobian by jacfwd, a forward-mode
        # product) the sample evaluates at once: those levels are global, so samples must not
        # interleave inside them.
        transformed = torch._C._functorch.maybe_current_level() is not None or fwAD._current_level >= 0
        if greenlet.getcurrent() is self.worker and not transformed:
            return self.worker.parent.switch(_Request(self.b, t, y, torch.is_grad_enabled()))
        padded = _Request(self.b, t, y, torch.is_grad_enabled())
        out = _evaluate(self.f, self.layout, [padded] * self.batch, padded.grad)
        return _row(out, padded, self.layout, padded.grad)


def _gather(results: list[Solution], layout: StateLayout, nfe: int) -> tuple[State, SolveStats, Status, str]:
    """Stack the samples' solutions into ``(T, batch, …)`` and add up their counters."""
    parts = [tuple(r.ys) if layout.is_tuple else (r.ys,) for r in results]
    ys = tuple(torch.stack([p[i] for p in parts], dim=1) for i in range(len(layout.shapes)))
    stats = SolveStats()
    for r in results:
        stats += r.stats
    stats.nfe, stats.nfe_backward = nfe, 0  # batched calls; the backward ones are added as they happen
    own = [{"nfe": r.stats.nfe, "steps_accepted": r.stats.steps_accepted, "steps_rejected": r.stats.steps_rejected,
            **r.stats.extra} for r in results]
    stats.per_sample = {key: torch.tensor([counters.get(key, 0) for counters in own], device=ys[0].device)
                        for key in dict.fromkeys(k for counters in own for k in counters)}
    backward = _BackwardCounts(stats, [r.stats for r in results])
    ys = tuple(backward.watch(y) for y in ys)
    failed = [b for b, r in enumerate(results) if r.status != Status.SUCCESS]
    ys = ys if layout.is_tuple else ys[0]
    if not failed:
        return ys, stats, Status.SUCCESS, ""
    first = results[failed[0]]
    return ys, stats, first.status, (f"{len(failed)} of {len(results)} samples failed; sample {failed[0]}: "
                                     f"{first.message}")


class _BackwardCounts:
    """Adds the samples' backward evaluations to the batch's stats once a backward pass has run
    (their own solves count them as autograd reaches them, after the outputs' nodes)."""

    def __init__(self, stats: SolveStats, samples: list[SolveStats]) -> None:
        self.stats, self.samples = stats, samples
        self.seen = [0] * len(samples)
        self.queued = False

    def watch(self, y: torch.Tensor) -> torch.Tensor:
        if y.requires_grad:
            y.register_hook(self._queue)
        return y

    def _queue(self, grad: torch.Tensor) -> None:
        if not self.queued:
            self.queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._add)

    def _add(self) -> None:
        self.queued = False
        now = [s.nfe_backward for s in self.samples]
        self.stats.nfe_backward += sum(n - s for n, s in zip(now, self.seen))
        self.seen = now
        self.stats.per_sample["nfe_backward"] = torch.tensor(now)
