"""The ``scipy_solver`` method: the whole interval handed to :func:`scipy.integrate.solve_ivp`.

Like torchdiffeq's method of that name, the state travels to NumPy, ``solve_ivp`` integrates it
in double precision with the scipy method named by option ``solver`` (default ``"LSODA"``), and
the results come back in the state's dtype and device. ``f`` is called without autograd, so
gradients need ``gradient="adjoint"`` (the backward adjoint solve then runs through scipy too).

Options: ``solver``, ``min_step`` (LSODA only, default 0), ``max_step`` (default inf),
``first_step`` (default: scipy's choice); ``eps``, ``grid_points`` and ``norm`` are accepted
and ignored, as torchdiffeq does (scipy measures the error with its own norm).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy
import torch
from scipy.integrate import BDF, DOP853, LSODA, RK23, RK45, OdeSolver, Radau, solve_ivp

from .errors import (
    InvalidInputError,
    MaxStepsExceededError,
    NonFiniteError,
    SolverError,
    StepSizeUnderflowError,
    choice_option,
)
from .field import VectorField
from .methods import Method
from .solution import SolveStats

SCIPY_SOLVERS: dict[str, type[OdeSolver]] = {
    "RK45": RK45, "RK23": RK23, "DOP853": DOP853, "Radau": Radau, "BDF": BDF, "LSODA": LSODA,
}
DEFAULT_SOLVER = "LSODA"
def _scipy_version() -> tuple[int, int]:
    major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in scipy.__version__.split(".")[:2])
    return major, minor


SCIPY_OPTIONS = ("solver", "min_step", "max_step", "first_step", "eps", "grid_points", "norm")

# (order, error_order) of each scipy method; 0 where the order varies from step to step.
_ORDERS = {"RK45": (5, 4), "RK23": (3, 2), "DOP853": (8, 7), "Radau": (5, 3), "BDF": (0, 0), "LSODA": (0, 0)}
# Their C/Fortran cores are real-only: scipy refuses a complex y0 for these.
_REAL_ONLY = ("Radau", "LSODA")
# Their Newton tolerance is computed from a scalar rtol (an array raises deep inside scipy).
_SCALAR_RTOL_ONLY = ("Radau", "BDF")

# LSODA's istate codes (ODEPACK) → the closest engine error. Its own message is scipy's
# "Unexpected istate in LSODA.", so the detail is recovered from the code.
_LSODA_ISTATE = {
    -1: (MaxStepsExceededError, "excess work done on this call (too many internal steps)"),
    -2: (SolverError, "excess accuracy requested (tolerances too small)"),
    -3: (SolverError, "illegal input detected"),
    -4: (StepSizeUnderflowError, "repeated error test failures (the step cannot be made small enough)"),
    -5: (StepSizeUnderflowError, "repeated convergence failures of the Newton iteration"),
    -6: (SolverError, "an error weight became zero (a component vanished with atol = 0)"),
    -7: (SolverError, "internal workspace insufficient"),
}
_STALLED = "the step did not advance t (t + h == t in double precision)"
# Consecutive non-finite evaluations of f (on top of two per component, for a finite-difference
# Jacobian) before we stop scipy: with a NaN f(t0, y0) its initial step is NaN and RK45 retries forever.
_MAX_NON_FINITE_RUN = 300


class _Watch:
    """What the scipy-side wrappers observe during one ``solve_ivp`` call."""

    __slots__ = ("error", "non_finite_run", "non_finite_t", "steps", "t")

    def __init__(self, t0: float) -> None:
        self.t = t0  # time of the last successful step
        self.steps = 0  # successful steps
        self.error: type[SolverError] | None = None  # engine error class chosen for a failed step
        self.non_finite_t: float | None = None  # time of the latest f evaluation, if it was not finite
        self.non_finite_run = 0  # consecutive non-finite evaluations of f


_WATCHED: dict[str, type[OdeSolver]] = {}


def _watched(name: str) -> type[OdeSolver]:
    """Scipy's solver class ``name`` with each step observed (numerics untouched).

    solve_ivp reports neither the time a failed solve reached nor its step count, and scipy's
    LSODA keeps "succeeding" with steps that no longer move t (an endless loop on a blow-up);
    watching ``_step_impl`` gives the first two and turns the stall into a failure.
    """
    cls = _WATCHED.get(name)
    if cls is not None:
        return cls
    base = SCIPY_SOLVERS[name]

    def __init__(self, fun, t0, y0, t_bound, *, watch: _Watch, **options) -> None:
        self._watch = watch
        base.__init__(self, fun, t0, y0, t_bound, **options)

    def _step_impl(self):
        t_before = self.t
        success, message = base._step_impl(self)
        if success and self.t == t_before:
            success, message = False, f"{_STALLED} at t={t_before:.17g}"
            self._watch.error = StepSizeUnderflowError
        elif success:
            self._watch.steps += 1
            self._watch.t = self.t
        elif name == "LSODA":
            istate = getattr(getattr(getattr(self, "_lsoda_solver", None), "_integrator", None), "istate", None)
            error, detail = _LSODA_ISTATE.get(istate, (SolverError, f"istate={istate}"))
            self._watch.error, message = error, f"{message} LSODA: {detail}"
        return success, message

    cls = _WATCHED[name] = type(f"Watched{name}", (base,), {"__init__": __init__, "_step_impl": _step_impl})
    return cls


def _tolerance(value: float | torch.Tensor) -> float | np.ndarray:
    """scipy's form of a tolerance ``solve`` already checked: a float, or a float64 array per component."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    return float(value)


def _number(options: dict[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidInputError(f"option {key} must be a number, got {value!r}")
    return float(value)


class ScipySolver:
    """Integrates a whole interval with ``scipy.integrate.solve_ivp`` (``Integration.run`` calls
    :meth:`solve_through` instead of stepping it)."""

    whole_interval = True
    adaptive = True
    fsal = False

    def __init__(self, options: dict[str, Any], rtol: Any, atol: Any) -> None:
        solver = choice_option("solver", options.get("solver", DEFAULT_SOLVER), SCIPY_SOLVERS)
        self.solver = solver
        self.name = f"scipy_solver[{solver}]"
        self.order, self.error_order = _ORDERS[solver]
        self.min_step = _number(options, "min_step", 0.0)
        self.max_step = _number(options, "max_step", math.inf)
        first_step = options.get("first_step")
        self.first_step = None if first_step is None else _number(options, "first_step", 0.0)
        if not (0 <= self.min_step < math.inf):
            raise InvalidInputError(f"option min_step must be a finite number ≥ 0, got {self.min_step}")
        if not self.max_step > 0:
            raise InvalidInputError(f"option max_step must be positive (inf for no limit), got {self.max_step}")
        if self.min_step > self.max_step:
            raise InvalidInputError(f"option min_step={self.min_step} exceeds max_step={self.max_step}")
        if self.first_step is not None and not (0 < self.first_step < math.inf):
            raise InvalidInputError(f"option first_step must be a positive finite number, got {self.first_step}")
        if self.min_step > 0 and solver == "LSODA" and _scipy_version() >= (1, 17):
            warnings.warn(
                f"scipy {scipy.__version__}'s LSODA takes the same steps with and without min_step (measured with "
                "1.17.1): the option has no effect with this scipy", UserWarning, stacklevel=4)
        if self.min_step > 0 and solver != "LSODA":
            # scipy would only warn that min_step has no effect, and then ignore it.
            raise InvalidInputError(f"option min_step is honoured only by solver 'LSODA', not {solver!r}")
        self.rtol = _tolerance(rtol)
        self.atol = _tolerance(atol)
        if isinstance(self.rtol, np.ndarray) and solver in _SCALAR_RTOL_ONLY:
            raise InvalidInputError(f"scipy's {solver} needs a scalar rtol; pass a float or use another solver")

    def record(self, stats: SolveStats) -> None:
        """Counters are added by :meth:`solve_through` itself."""

    def solve_through(
        self, field: VectorField, y0: torch.Tensor, times: list[float], stats: SolveStats
    ) -> list[torch.Tensor]:
        """The flat states at ``times[1:]``, integrated from ``y0`` at ``times[0]`` by ``solve_ivp``.

        Raises :class:`InvalidInputError` for a problem scipy cannot take, and a
        :class:`SolverError` subclass (with scipy's message and the time reached) when it fails.
        """
        if len(times) < 2:
            return []
        if torch.is_grad_enabled() and y0.requires_grad:
            raise InvalidInputError(
                "method 'scipy_solver' cannot backpropagate through scipy; use gradient='adjoint' "
                "(odeint_adjoint), or run the solve under torch.no_grad()"
            )
        n = y0.numel()
        if n == 0:  # nothing to integrate (scipy would call it finished at once)
            return [y0.detach().clone() for _ in times[1:]]
        for name, tol in (("rtol", self.rtol), ("atol", self.atol)):
            if isinstance(tol, np.ndarray) and tol.shape != (n,):
                raise InvalidInputError(f"{name} has {tol.size} components but the flat state has {n}")
        complex_state = y0.is_complex()
        if complex_state and self.solver in _REAL_ONLY:
            raise InvalidInputError(
                f"scipy's {self.solver} does not support complex states; use solver 'RK45', 'RK23', 'DOP853' or "
                "'BDF', or split the state into real and imaginary parts"
            )
        work = torch.complex128 if complex_state else torch.float64
        dtype, device = y0.dtype, y0.device
        watch = _Watch(times[0])
        max_non_finite = _MAX_NON_FINITE_RUN + 2 * n

        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            # A copy, not a view of scipy's array: f may write into its input.
            y_state = torch.tensor(y, dtype=dtype, device=device)
            with torch.no_grad():
                out = field(float(t), y_state)
            # A copy again: scipy keeps some results (the FSAL slope), and f may return a buffer it reuses.
            result = out.detach().to(device="cpu", dtype=work, copy=True).numpy()
            if np.isfinite(result).all():
                watch.non_finite_t, watch.non_finite_run = None, 0
                return result
            watch.non_finite_t, watch.non_finite_run = float(t), watch.non_finite_run + 1
            if watch.non_finite_run > max_non_finite:
                raise NonFiniteError(
                    f"f returned non-finite values (NaN or inf) {watch.non_finite_run} times in a row, lately at "
                    f"t={float(t):.6g}, and scipy's {self.solver} kept retrying; last step reached t={watch.t:.6g}"
                )
            return result

        span = abs(times[-1] - times[0])
        options: dict[str, Any] = {"max_step": self.max_step}
        if self.solver == "LSODA":
            options["min_step"] = self.min_step  # the other solvers warn that it has no effect
        if self.first_step is not None:
            # scipy rejects a first step longer than the interval (the adjoint's sub-intervals can be short).
            options["first_step"] = min(self.first_step, span)
        start = y0.detach().to(device="cpu", dtype=work).numpy()
        try:
            sol = solve_ivp(
                rhs, (times[0], times[-1]), start, method=_watched(self.solver), t_eval=np.asarray(times),
                rtol=self.rtol, atol=self.atol, watch=watch, **options,
            )
        except SolverError:
            raise
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
            # scipy's BDF, for one, fails inside its LU factorisation once f has returned NaN or inf.
            if watch.non_finite_t is not None:
                raise NonFiniteError(
                    f"f returned non-finite values (NaN or inf) at t={watch.non_finite_t:.6g} and scipy's "
                    f"{self.solver} failed on them ({err}); last step reached t={watch.t:.6g}"
                ) from err
            raise
        extra = stats.extra
        for key in ("nfev", "njev", "nlu"):
            extra[f"scipy_{key}"] = extra.get(f"scipy_{key}", 0) + int(getattr(sol, key))
        stats.steps_accepted += watch.steps
        # Columns: the output times reached, times[0] first (an empty list when not even one step succeeded).
        reached = np.asarray(sol.y).reshape(n, -1)[:, 1:]
        states = list(torch.from_numpy(np.ascontiguousarray(reached.T)).to(device=device, dtype=dtype))
        if not sol.success:
            raise self._failure(sol.message, watch, times, states)
        if len(states) != len(times) - 1:  # success must mean every requested time was reached
            raise SolverError(
                f"scipy's {self.solver} reported success but returned {len(states) + 1} of {len(times)} output times"
            )
        finite = np.isfinite(reached).all(axis=0)
        if not finite.all():
            # LSODA, for one, "succeeds" with NaN states when f returns NaN.
            bad = int(np.flatnonzero(~finite)[0])
            raise self._with_states(NonFiniteError(
                f"the state became non-finite (NaN or inf) by t={times[bad + 1]:.6g} (scipy's {self.solver}, which "
                "reported success); check f"
            ), states[:bad])
        return states

    @staticmethod
    def _with_states(error: SolverError, states: list[torch.Tensor]) -> SolverError:
        # The states at the output times passed before the failure, for the caller to keep.
        error.states = states
        return error

    def _failure(self, message: str, watch: _Watch, times: list[float], states: list[torch.Tensor]) -> SolverError:
        """The engine error for a failed ``solve_ivp`` call, with scipy's message; ``error.states`` holds
        the states at the output times reached."""
        where = f"at t={watch.t:.6g} (target {times[-1]:.6g})"
        text = f"scipy's {self.solver} failed {where}: {message}"
        if watch.non_finite_t is not None:
            return self._with_states(NonFiniteError(
                f"{text}; f returned non-finite values (NaN or inf) at t={watch.non_finite_t:.6g}"), states)
        if watch.error is not None:
            error = watch.error
        elif message == OdeSolver.TOO_SMALL_STEP:
            error = StepSizeUnderflowError
        else:
            error = SolverError
        if error is StepSizeUnderflowError:
            text += "; the solution is probably blowing up there, or the tolerances are too tight"
        return self._with_states(error(text), states)


SCIPY_METHODS = (
    Method(
        name="scipy_solver",
        make_solver=lambda options, rtol, atol: ScipySolver(options, rtol, atol),
        adaptive=True,
        options=SCIPY_OPTIONS,
        description=f"scipy.integrate.solve_ivp (option solver: {', '.join(SCIPY_SOLVERS)}; "
        f"default {DEFAULT_SOLVER}), float64 on the CPU, no backprop",
    ),
)

__all__ = ["DEFAULT_SOLVER", "SCIPY_OPTIONS", "SCIPY_SOLVERS", "ScipySolver"]
