"""What a solve returns: the states at the requested times, counters, and a status."""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import Enum

import torch

from .state import State


@dataclass
class SolveStats:
    """Counters of one solve, gathered by the engine itself (``f`` needs no instrumentation).

    ``nfe_backward`` is filled in by the backward pass: with ``gradient="adjoint"`` it counts
    evaluations of the augmented adjoint dynamics (each one ``f`` call plus one vector–Jacobian
    product, as torchdiffeq counts them); with ``gradient="backprop"`` it counts the recorded
    ``f`` calls that autograd differentiated. ``extra`` holds solver-specific counters (the
    proximal solvers' inner iterations, for instance).
    """

    method: str = ""
    nfe: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    steps_backward: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    switches: list[tuple[float, str]] = field(default_factory=list)  # method="auto": (t, solver taken over)
    per_sample: dict[str, torch.Tensor] = field(default_factory=dict)  # per_sample=True: counters of shape (batch,)

    @property
    def steps(self) -> int:
        return self.steps_accepted + self.steps_rejected

    def __iadd__(self, other: SolveStats) -> SolveStats:
        for f in fields(self):
            if f.name == "method":
                continue
            if f.name == "switches":
                self.switches.extend(other.switches)
            elif f.name == "per_sample":
                for k, v in other.per_sample.items():
                    self.per_sample[k] = self.per_sample[k] + v if k in self.per_sample else v
            elif f.name == "extra":
                for k, v in other.extra.items():
                    # Counters add up; maxima (keys ending in "_max") take the larger value.
                    self.extra[k] = max(self.extra.get(k, v), v) if k.endswith("_max") else self.extra.get(k, 0) + v
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        if not self.method:
            self.method = other.method
        return self

    def as_dict(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "per_sample")}
        out.update({f"per_sample_{k}": v.tolist() for k, v in self.per_sample.items()})
        out.update(self.extra)
        return out


class DenseOutput:
    """The solution anywhere in the solved interval, from the dense output of every accepted step.

    Call it with a 0-d or 1-D tensor of times inside ``[t0, t1]``; it returns the state there
    (with a leading time axis for 1-D input), in the state's structure.
    """

    def __init__(self, steps: list, layout, t_dtype: torch.dtype) -> None:
        self.steps, self.layout, self.t_dtype = steps, layout, t_dtype
        self.direction = 1.0 if not steps or steps[0].h > 0 else -1.0
        self._ends = [self.direction * s.t1 for s in steps]

    @property
    def t0(self) -> float:
        return self.steps[0].t0

    @property
    def t1(self) -> float:
        return self.steps[-1].t1

    def flat_at(self, x: float) -> torch.Tensor:
        """The flat state at time ``x`` (the first or last step's polynomial extrapolates outside)."""
        i = min(bisect.bisect_left(self._ends, self.direction * x), len(self.steps) - 1)
        step = self.steps[i]
        return step([(x - step.t0) / step.h])[0] if x != step.t0 else step.y0

    def __call__(self, t: torch.Tensor) -> State:
        times = torch.as_tensor(t).detach().reshape(-1).tolist()
        lo, hi = sorted((self.t0, self.t1))
        outside = [x for x in times if not lo <= x <= hi]
        if outside:
            raise ValueError(f"dense output covers [{lo:.6g}, {hi:.6g}]; got times outside it: {outside[:5]}")
        flat = [self.flat_at(x) for x in times]
        stacked = self.layout.unflatten_stacked(torch.stack(flat))
        if torch.as_tensor(t).ndim == 0:
            return stacked[0] if not self.layout.is_tuple else tuple(s[0] for s in stacked)
        return stacked


class Status(str, Enum):
    """The result code of a solve, forward and backward: ``SUCCESS`` or what failed.

    A ``str`` enum, so ``sol.status == "success"`` and JSON keep working; ``.message`` explains
    the code in general (``Solution.message`` has the particulars of one failure).
    """

    SUCCESS = "success"
    MAX_STEPS_EXCEEDED = "max_steps_exceeded"
    STEP_SIZE_UNDERFLOW = "step_size_underflow"
    NON_FINITE = "non_finite"
    INNER_NOT_CONVERGED = "inner_not_converged"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def message(self) -> str:
        return _STATUS_MESSAGES[self]


_STATUS_MESSAGES = {
    Status.SUCCESS: "the solve reached every requested time",
    Status.MAX_STEPS_EXCEEDED: "the solve needed more steps (or evaluations of f) than its cap",
    Status.STEP_SIZE_UNDERFLOW: "the step size fell below what the time's floating point can resolve",
    Status.NON_FINITE: "f or the state became NaN or infinite",
    Status.INNER_NOT_CONVERGED: "implicit stages stopped at their iteration cap unconverged",
}


@dataclass
class Solution:
    """States at every requested time, stacked on a leading time axis like torchdiffeq.

    ``status`` is a :class:`Status`: ``SUCCESS`` or, for a solve run with ``throw=False``, the
    failure; then the states after the failure are NaN and ``message`` says what happened. A
    backward (adjoint) solve that fails with ``throw=False`` sets them too, when ``backward()``
    runs (the gradients are then NaN): ``message`` starts with "backward". With an event
    function, ``ts`` is ``(t0, t*)``, ``ys`` holds the states there and ``event_t`` is ``t*``
    (differentiable); with ``dense=True``, ``dense`` evaluates the solution anywhere in between.
    """

    ts: torch.Tensor
    ys: State
    stats: SolveStats
    status: Status = Status.SUCCESS
    message: str = ""
    event_t: torch.Tensor | None = None
    dense: DenseOutput | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS


class StatsRecorder:
    """Collects the :class:`SolveStats` of every solve run inside :func:`record_stats`."""

    def __init__(self) -> None:
        self.solves: list[SolveStats] = []

    def total(self) -> SolveStats:
        """Sum over the recorded solves; read it after ``backward()`` for backward counts."""
        out = SolveStats()
        for s in self.solves:
            out += s
        return out

    @property
    def nfe(self) -> int:
        return sum(s.nfe for s in self.solves)

    @property
    def nfe_backward(self) -> int:
        return sum(s.nfe_backward for s in self.solves)

    def reset(self) -> None:
        self.solves.clear()


_active = threading.local()


@contextlib.contextmanager
def record_stats() -> Iterator[StatsRecorder]:
    """Record the stats of every solve in the block, including ``odeint``/``odeint_adjoint`` calls.

    The recorder keeps references, so backward counts appear once ``backward()`` has run::

        with odekit.record_stats() as rec:
            loss = model(x).sum()      # any number of odeint calls inside
        loss.backward()
        print(rec.nfe, rec.nfe_backward)
    """
    stack = getattr(_active, "stack", None)
    if stack is None:
        stack = _active.stack = []
    rec = StatsRecorder()
    stack.append(rec)
    try:
        yield rec
    finally:
        stack.remove(rec)


def publish(stats: SolveStats) -> None:
    """Hand ``stats`` to every active recorder."""
    for rec in getattr(_active, "stack", ()):
        rec.solves.append(stats)
