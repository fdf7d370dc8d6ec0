"""``method="auto"``: an explicit pair that hands over to the stiff BDF/NDF solver and back.

The thesis names switching between explicit and implicit solvers as missing (§5.6, ch. 6).
The solve starts with Tsitouras' 5(4) pair. Each explicit step already holds two evaluations
at the step's end time (the last stage at ``y1`` and an earlier stage with ``c = 1`` at
``y_j``), so ``ρ = ‖f(y1) − f(y_j)‖ / ‖y1 − y_j‖`` estimates the dominant eigenvalue's modulus
for free (Hairer & Wanner's test in DOPRI5, Solving ODEs II §IV.2); each such estimate is a lower
bound along one direction, so the largest of the last 8 stands for ρ. When ``h·ρ`` sits at the
method's stability boundary on the negative real axis (computed from the tableau) for 15
steps (accepted ones, and rejected ones: a step rejected at the boundary failed for
instability), with fewer than 6 accepted steps below it in between, the step size is set by
stability rather than accuracy: the problem is stiff, and the solve continues with
:class:`~odekit.solve.bdf.BDF` from the current point at order 1.

In the stiff phase the spectral radius of the Jacobian Newton uses (power iteration on the
dense ``J``, or on finite-difference products for large states) is checked whenever ``J``
is fresh, and at least every 25 steps: when the explicit method's stable step ``boundary/ρ``
exceeds 4× the BDF step for 5 checks in a row, an explicit step would be cheaper and the solve
switches back, capping the next step at the stable one. Every switch is recorded in
``stats.switches`` as ``(t, solver)``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .bdf import BDF, BDF_OPTIONS, NDF_KAPPA, BDFState, BDFStep, make_bdf
from .controller import PIController, PIState, StepProposal
from .inner import difference_increment
from .methods import ADAPTIVE_OPTIONS, Method, pi_controller
from .norms import Tolerance, rms_norm
from .runge_kutta import RungeKutta
from .solution import SolveStats
from .tableau import ButcherTableau
from .tableaus import TABLEAUS

RHO_WINDOW = 8  # explicit steps whose largest ρ estimate stands for ρ
STIFF_STEPS = 15  # accepted steps at the stability boundary that make the problem stiff
CALM_STEPS = 6  # steps below it that reset the count
STIFF_THRESHOLD = 0.95  # h·ρ above this fraction of the boundary counts as "at the boundary"
NONSTIFF_RATIO = 4.0  # explicit stable step ≥ this × the BDF step ...
NONSTIFF_CHECKS = 5  # ... at this many checks in a row: back to explicit
CHECK_EVERY = 25  # stiff steps between spectral-radius checks when J stays old
MIN_STIFF_STEPS = 20  # stiff steps taken before a switch back is considered

AUTO_OPTIONS = tuple(dict.fromkeys(tuple(k for k in ADAPTIVE_OPTIONS if k not in (
    "norm", "step_size", "grid_constructor", "perturb", "interp")) + BDF_OPTIONS))


def stability_boundary(tableau: ButcherTableau) -> float:
    """Where the stability region of an explicit RK method ends on the negative real axis:
    the smallest ``x > 0`` with ``|R(−x)| > 1``, ``R(z) = 1 + z bᵀ (I − zA)⁻¹ 𝟙``."""
    A = np.array(tableau.matrix(), dtype=float)
    b = np.array([float(x) for x in tableau.b])
    ones = np.ones(len(b))

    def amplification(x: float) -> float:
        z = -x
        return abs(1 + z * b @ np.linalg.solve(np.eye(len(b)) - z * A, ones))

    lo, hi = 0.0, 0.1
    while amplification(hi) <= 1 + 1e-12:
        lo, hi = hi, hi + 0.1
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if amplification(mid) <= 1 + 1e-12 else (lo, mid)
    return lo


@dataclass(frozen=True)
class AutoState:
    stiff: bool
    inner: Any  # the active solver's state
    pi: PIState
    hits: int = 0  # explicit: steps at the boundary; stiff: checks favouring explicit
    calm: int = 0  # explicit: steps below the boundary since the last hit; stiff: steps since the check
    stiff_steps: int = 0
    checked: object = None  # stiff: the Jacobian last checked


@dataclass
class AutoStep:
    stiff: bool
    K: Any
    t1: float
    y1: torch.Tensor
    proposal: StepProposal | None
    pi: PIState | None = None
    stiffness: float = 0.0  # explicit: h·ρ of the step
    switch: bool = False
    hits: int = 0
    calm: int = 0
    checked: object = None


class AutoSwitch:
    """The ``auto`` solver: see the module docstring. One instance per solve (it records switches)."""

    fsal = True
    adaptive = True
    restartable = False
    proposes_steps = True

    def __init__(self, explicit: RungeKutta, pi: PIController, stiff: BDF) -> None:
        self.name = "auto"
        self.explicit, self.pi, self.stiff = explicit, pi, stiff
        self.order = explicit.order
        self.error_order = explicit.error_order
        self.boundary = stability_boundary(explicit.tableau)
        tableau = explicit.tableau
        c = [float(x) for x in tableau.c]
        ends = [j for j in range(tableau.stages - 1) if c[j] == 1.0]
        if not (tableau.fsal and ends):
            raise ValueError(f"{tableau.name}: stiffness detection needs an FSAL pair with an earlier stage at c = 1")
        j = ends[-1]
        a_j = [float(x) for x in tableau.a[j]] + [0.0] * (tableau.stages - j)
        self._stage = j
        self._difference = torch.tensor([float(b) - a for b, a in zip(tableau.b, a_j)], dtype=torch.float64)
        self.switches: list[tuple[float, str]] = []
        self.lands_on_end = False  # as the stiff solver does while it is active (read by the loop)
        self._rejected_hits = 0  # rejected explicit steps at the boundary since the last accepted one
        self._recent_rho: deque[float] = deque(maxlen=RHO_WINDOW)  # ρ estimates of the last explicit steps

    def init(self, t0: float, y0: torch.Tensor, f0: torch.Tensor | None) -> AutoState:
        return AutoState(False, self.explicit.init(t0, y0, f0), PIState(1.0, self.explicit.error_order))

    def step(self, field, t0: float, y0: torch.Tensor, h: float, state: AutoState) -> tuple[torch.Tensor, AutoStep]:
        if state.stiff:
            y1, K = self.stiff.step(field, t0, y0, h, state.inner)
            out = AutoStep(True, K, K.t, y1, K.proposal)
            if K.proposal is not None and K.proposal.accept:
                self._check_nonstiff(field, K, state, out)
            return y1, out
        y1, K = self.explicit.step(field, t0, y0, h, state.inner)
        with torch.no_grad():
            ratio = self.pi.error_ratio(self.explicit.error(K), y0, y1, h)
            if not math.isfinite(ratio):
                return y1, AutoStep(False, K, t0 + h, y1, StepProposal(ratio, False, h))
            accept, h_next, pi = self.pi.adapt(state.pi, h, ratio)
            stiffness = self._explicit_stiffness(K)
        out = AutoStep(False, K, t0 + h, y1, StepProposal(ratio, accept, h_next), pi, stiffness)
        # Each estimate ‖J v‖/‖v‖ is a lower bound of ρ along one direction v, noisy from step to
        # step: the largest of the recent ones is the estimate of ρ.
        self._recent_rho.append(stiffness / abs(h))
        at_boundary = abs(h) * max(self._recent_rho) > STIFF_THRESHOLD * self.boundary
        if not accept and at_boundary:
            self._rejected_hits += 1  # rejected for instability; counted with the next accepted step
        if accept:
            hits, calm = state.hits + self._rejected_hits, state.calm
            self._rejected_hits = 0
            if at_boundary:
                hits, calm = hits + 1, 0
            else:
                calm += 1
                if calm >= CALM_STEPS:
                    hits = 0
            out.hits, out.calm, out.switch = hits, calm, hits >= STIFF_STEPS
        return y1, out

    def _explicit_stiffness(self, K: torch.Tensor) -> float:
        """``h·ρ`` from the last stage and the earlier one at the step's end (the step's ``h`` cancels)."""
        spread = float(rms_norm(K[-1] - K[self._stage]))
        gap = float(rms_norm(torch.mv(K.T, self._difference.to(K))))
        return spread / gap if gap > 0 else 0.0

    def _check_nonstiff(self, field, K: BDFStep, state: AutoState, out: AutoStep) -> None:
        """Whether the explicit method's stable step now beats the BDF step by ``NONSTIFF_RATIO``."""
        inner: BDFState = state.inner
        jacobian = inner.linear.jacobian
        due = jacobian is not None and jacobian is not state.checked
        if not due and state.calm + 1 < CHECK_EVERY:
            out.hits, out.calm, out.checked = state.hits, state.calm + 1, state.checked
            return
        rho = self._spectral_radius(field, K.t, out.y1, jacobian)
        stable = self.boundary / rho if rho > 0 else math.inf
        favours = stable > NONSTIFF_RATIO * abs(K.proposal.h_next)
        hits = state.hits + 1 if favours else 0
        out.hits, out.calm, out.checked = hits, 0, jacobian
        if hits >= NONSTIFF_CHECKS and state.stiff_steps >= MIN_STIFF_STEPS:
            out.switch = True
            h_next = math.copysign(min(abs(K.proposal.h_next) * NONSTIFF_RATIO, 0.8 * stable), K.proposal.h_next)
            out.proposal = StepProposal(K.proposal.ratio, True, h_next)

    def _spectral_radius(self, field, t: float, y: torch.Tensor, jacobian: torch.Tensor | None) -> float:
        """``|λ_max|`` of ``∂f/∂y`` by 12 power iterations (on ``J``, or on difference products)."""
        with torch.no_grad():
            y = y.detach()
            v = torch.ones_like(y) / math.sqrt(max(y.numel(), 1))
            f0 = None if jacobian is not None else field(t, y, 0)
            rho = 0.0
            for _ in range(12):
                if jacobian is not None:
                    w = jacobian @ v
                else:
                    eps = difference_increment(y, v)
                    w = (field(t, y + eps * v, 0) - f0) / eps
                rho = float(torch.linalg.vector_norm(w))
                if rho == 0 or not math.isfinite(rho):
                    return 0.0 if rho == 0 else math.inf
                v = w / rho
        return rho

    def accepted(self, state: AutoState, K: AutoStep) -> AutoState:
        if K.stiff:
            inner = self.stiff.accepted(state.inner, K.K)
            if K.switch:
                self.switches.append((K.t1, self.explicit.name))
                self.lands_on_end = False
                return AutoState(False, None, PIState(1.0, self.explicit.error_order))
            return AutoState(True, inner, state.pi, K.hits, K.calm, state.stiff_steps + 1, K.checked)
        inner = self.explicit.accepted(state.inner, K.K)
        if K.switch:
            self.switches.append((K.t1, self.stiff.name))
            self.lands_on_end = True
            return AutoState(True, self.stiff.init(K.t1, K.y1, inner), state.pi)
        return AutoState(False, inner, K.pi, K.hits, K.calm)

    def error(self, K: AutoStep) -> StepProposal | None:
        return K.proposal

    def interpolate(self, y0: torch.Tensor, K: AutoStep, h: float, theta: torch.Tensor) -> torch.Tensor:
        solver = self.stiff if K.stiff else self.explicit
        return solver.interpolate(y0, K.K, h, theta)

    def start_slope(self, K: AutoStep) -> torch.Tensor | None:
        return None if K.stiff else self.explicit.start_slope(K.K)

    def record(self, stats: SolveStats) -> None:
        self.stiff.record(stats)
        stats.switches.extend(self.switches)
        stats.extra["switches"] = stats.extra.get("switches", 0) + len(self.switches)


def make_auto(options: dict[str, Any], rtol: Tolerance, atol: Tolerance) -> AutoSwitch:
    return AutoSwitch(RungeKutta(TABLEAUS["tsit5"]), pi_controller(options, rtol, atol),
                      make_bdf("ndf", NDF_KAPPA)(options, rtol, atol))


AUTO_METHODS = (
    Method("auto", make_auto, adaptive=True, options=AUTO_OPTIONS, proposes_steps=True,
           adjoint_trajectory="interpolate",
           description="tsit5, switching to the stiff NDF solver where stiffness is detected and back"),
)
