"""Step-size controllers: a fixed grid, the PI controller of embedded Runge–Kutta pairs, and the
pass-through for solvers that choose their own steps (variable-order BDF, the auto switch).

A controller decides where the next step ends and whether a step is accepted; the solver
only knows how to take one step. The two combine freely (diffrax's design).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import InvalidInputError, MaxStepsExceededError
from .norms import ErrorScale, Norm, rms_norm

# A rejected step is retried at most this fraction as long (or dfactor, if larger): the step-size law
# alone can return a factor that rounds to 1 (safety = 1, error ratio just above 1), and retrying the
# same failing step would loop until the step cap.
_MAX_REJECT_FACTOR = 0.9


@dataclass(frozen=True)
class GridState:
    """Where a fixed-grid solve is: the grid (explicit points, or ``t0 + i·step`` for ``count`` steps)
    and the index of the step's start."""

    points: tuple[float, ...]
    t0: float = 0.0
    step: float = 0.0
    count: float = 0
    pos: int = 0

    def point(self, i: int) -> float:
        if self.step == 0.0:
            return self.points[i]
        return self.points[-1] if i >= self.count else self.t0 + i * self.step


@dataclass(frozen=True)
class FixedGrid:
    """Steps on a fixed grid: ``t0, t0 + h, …`` ending exactly at the last output time.

    Without ``step_size`` the grid is ``grid`` (a user's grid, already checked to run from the
    first to the last output time) or else the output times themselves (torchdiffeq's
    behaviour). Grid points are produced one at a time from the :class:`GridState`, so a tiny
    step with a step cap fails at the cap instead of building a huge list first. ``open_ended``
    (event mode) steps on past the last output time until the loop stops. A grid of more than
    ``max_steps`` steps fails at :meth:`init`, before the first step. ``step_size`` comes checked
    from :func:`~odekit.solve.methods.resolve`. The controller holds only its settings: the
    position on the grid is the state passed in and out.
    """

    step_size: float | None = None
    grid: tuple[float, ...] | None = None
    open_ended: bool = False
    max_steps: float = math.inf
    adaptive = False

    def init(self, times: list[float], **_: object) -> tuple[float, GridState]:
        """The first step and the state at the start of the grid."""
        if self.step_size is None:
            if self.open_ended:
                raise InvalidInputError(
                    "event handling on a fixed grid needs options['step_size'] (a grid of output times or from "
                    "grid_constructor ends at t[1], but an event solve runs until the event)")
            points = tuple(self.grid if self.grid is not None else times)
            self._check_count(len(points) - 1, times, "grid_constructor's grid" if self.grid is not None
                              else "the grid of output times t (no step_size)", "pass a coarser grid")
            state = GridState(points, count=len(points) - 1)
        else:
            span = times[-1] - times[0]
            step = math.copysign(self.step_size, span if span else 1.0)
            if self.open_ended:
                count = math.inf
            else:
                steps = abs(span) / self.step_size
                self._check_count(steps, times, f"the grid of step_size={self.step_size:.6g}",
                                  "take a larger step_size")
                count = max(1, math.ceil(steps - 1e-9))
            state = GridState((times[-1],), times[0], step, count)
        return state.point(1) - state.point(0), state

    def _check_count(self, steps: float, times: list[float], grid: str, fix: str) -> None:
        """Fail at once if the grid takes more than ``max_steps`` steps."""
        if steps <= self.max_steps and math.isfinite(steps):
            return
        where = f"{grid} from t={times[0]:.6g} to t={times[-1]:.6g}"
        if not math.isfinite(steps):
            raise MaxStepsExceededError(f"{where} takes more steps than a float can count; {fix}")
        count = math.ceil(steps - 1e-9)
        raise MaxStepsExceededError(
            f"{where} takes {count} steps, more than max_num_steps={self.max_steps}; {fix}, "
            f"or allow it with options={{'max_num_steps': {count}}}"
        )

    def end(self, state: GridState, t: float, h: float) -> float:
        """Where the step from ``t`` ends: the grid point itself (``t + h`` would accumulate rounding)."""
        return state.point(state.pos + 1)

    def adapt(self, state: GridState, h: float, ratio: float | None = None) -> tuple[bool, float, GridState]:
        """Every step is accepted; the next one runs to the next grid point."""
        pos = state.pos + 1
        state = dataclasses.replace(state, pos=pos)
        if pos >= state.count:
            return True, h, state
        return True, state.point(pos + 1) - state.point(pos), state


@dataclass(frozen=True)
class PIState:
    """The PI(D) controller's memory: the last two accepted error ratios and the method's error order."""

    previous_ratio: float = 1.0
    order: int = 1
    earlier_ratio: float = 1.0


@dataclass
class PIController:
    """Proportional–integral(–derivative) step-size control on an embedded error estimate.

    The error ratio is ``‖err / (atol + rtol·max(|y0|, |y1|))‖`` (RMS by default); a step is
    accepted when it is ≤ 1. The next step is ``h · safety · r_n^{-(pcoeff+icoeff+dcoeff)/k} ·
    r_{n-1}^{(pcoeff+2·dcoeff)/k} · r_{n-2}^{-dcoeff/k}`` with ``k`` the method's order and
    ``r_{n-1}``, ``r_{n-2}`` the previous accepted ratios (Söderlind's PID form, as diffrax's
    ``PIDController``), clipped to ``[dfactor, ifactor]`` (and never shrunk after an accepted
    step). ``pcoeff=0, icoeff=1`` — the default — is the
    integral controller torchdiffeq uses, so step sequences and NFE match it; PI settings such as
    ``pcoeff=0.3, icoeff=0.4`` damp step-size oscillation on stiff-ish neural fields. A rejected
    step is retried at most ``max(dfactor, 0.9)`` times as long, so a rejection always shrinks it.

    The options come checked from :func:`~odekit.solve.methods.resolve` (ranges in
    :data:`~odekit.solve.methods.NUMBER_OPTIONS`, ``min_step ≤ max_step``).
    """

    rtol: float
    atol: float
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    norm: Norm = rms_norm
    adaptive = True

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):  # per-component tolerances
                valid = bool(torch.isfinite(value).all()) and bool((value > 0).all())
            else:
                valid = isinstance(value, (int, float)) and value > 0 and math.isfinite(value)
            if not valid:
                raise InvalidInputError(
                    f"{name} must be a positive finite number, got {value!r}; "
                    "typical values are rtol=1e-7, atol=1e-9 (torchdiffeq's defaults) or 1e-3 for training"
                )
        self._scale = ErrorScale(self.rtol, self.atol)  # derived from the settings once; no solve state

    def init(
        self,
        times: list[float],
        *,
        field: Callable[[float, torch.Tensor], torch.Tensor],
        y0: torch.Tensor,
        f0: torch.Tensor,
        order: int,
    ) -> tuple[float, PIState]:
        """Initial step (Hairer, Nørsett & Wanner, Solving ODEs I, §II.4; costs one evaluation) and state."""
        state = PIState(1.0, order)
        direction = 1.0 if times[-1] >= times[0] else -1.0
        if self.first_step is not None:
            return direction * self._clamp(self.first_step), state
        with torch.no_grad():
            y0d, f0d = y0.detach(), f0.detach()
            scale = y0d.abs().mul_(self.rtol).add_(self.atol)
            d0 = self._measure(y0d / scale)
            d1 = self._measure(f0d / scale)
            h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            if not h0 > 0:  # d1 overflowed: f0 is huge against the tolerances
                h0 = 1e-12
            f1 = field(times[0] + direction * h0, y0d + (direction * h0) * f0d)
            d2 = self._measure((f1 - f0d) / scale) / h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
        h = min(100 * h0, h1)
        if not math.isfinite(h):
            h = 1e-6
        return direction * self._clamp(h), state

    def end(self, state: PIState, t: float, h: float) -> float:
        """Where the step of size ``h`` from ``t`` ends."""
        return t + h

    def _clamp(self, h: float) -> float:
        """``|h|`` limited to ``[min_step, max_step]``."""
        return min(max(h, self.min_step), self.max_step)

    def error_ratio(self, error: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, h: float) -> float:
        """``error`` is the stage combination ``Σ e_j k_j``; the local error estimate is ``h·error``.

        Call without autograd recording (the step decision is not differentiated).
        """
        return abs(h) * self._measure(error.div_(self._scale(y0, y1)))

    def _measure(self, x: torch.Tensor) -> float:
        """``‖x‖``; a NaN norm of a finite ``x`` is the norm's fault, not ``f``'s: say so at once."""
        value = float(self.norm(x))
        if math.isnan(value) and bool(torch.isfinite(x).all()):
            raise InvalidInputError(
                "the error norm (options['norm'], or adjoint_options['norm'] in an adjoint solve) returned NaN "
                "for a finite input: the state and f's values are finite. A norm must return a finite, "
                "non-negative number for finite input"
            )
        return value

    def adapt(self, state: PIState, h: float, ratio: float) -> tuple[bool, float, PIState]:
        """Accept or reject the step of size ``h`` with error ratio ``ratio``; returns the next step and state.

        A step at ``min_step`` is accepted whatever its error (torchdiffeq's rule): the user
        asked for no smaller steps.
        """
        accept = ratio <= 1.0 or abs(h) <= self.min_step
        if ratio == 0.0:
            factor = self.ifactor
        else:
            k = state.order
            factor = self.safety * ratio ** (-(self.pcoeff + self.icoeff + self.dcoeff) / k)
            if self.pcoeff or self.dcoeff:
                factor *= state.previous_ratio ** ((self.pcoeff + 2 * self.dcoeff) / k)
            if self.dcoeff:
                factor *= state.earlier_ratio ** (-self.dcoeff / k)
            factor = min(self.ifactor, max(factor, 1.0 if accept else self.dfactor))
            if not accept:
                factor = min(factor, max(self.dfactor, _MAX_REJECT_FACTOR))
        if accept:
            state = dataclasses.replace(state, previous_ratio=min(max(ratio, 1e-10), 1.0),
                                        earlier_ratio=state.previous_ratio)
        return accept, math.copysign(self._clamp(abs(h * factor)), h), state

    def retry(self, state: PIState, h: float) -> tuple[float, PIState]:
        """The step after one the solver could not complete (non-finite stages, a failed inner solve)."""
        return h * self.dfactor, state


@dataclass(frozen=True)
class StepProposal:
    """A solver's own verdict on a step: its error ratio (≤ 1 passes), whether to accept it, and
    the next step size. ``float()`` of it is the ratio (the loop checks that for finiteness)."""

    ratio: float
    accept: bool
    h_next: float

    def __float__(self) -> float:
        return float(self.ratio)


@dataclass(frozen=True)
class SolverProposed:
    """For solvers whose step and order selection are one decision (Shampine–Reichelt's BDF,
    ``method="auto"``): the solver's :class:`StepProposal` is taken as it is, limited to
    ``[min_step, max_step]``. The first step comes from ``start`` (a :class:`PIController` with
    the solve's tolerances), whose rule is the standard one.
    """

    start: PIController
    adaptive = True

    def init(self, times: list[float], **kwargs) -> tuple[float, PIState]:
        return self.start.init(times, **kwargs)

    def end(self, state: PIState, t: float, h: float) -> float:
        return t + h

    def error_ratio(self, proposal: StepProposal, y0: torch.Tensor, y1: torch.Tensor, h: float) -> StepProposal:
        return proposal

    def adapt(self, state: PIState, h: float, proposal: StepProposal) -> tuple[bool, float, PIState]:
        accept = proposal.accept or abs(h) <= self.start.min_step
        return accept, math.copysign(self.start._clamp(abs(proposal.h_next)), h), state

    def retry(self, state: PIState, h: float) -> tuple[float, PIState]:
        """After a step the solver could not complete (Newton failed): half the step."""
        return 0.5 * h, state
