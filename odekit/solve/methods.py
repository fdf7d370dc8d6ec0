"""The registry of solver methods: name → how to build the solver and its controller.

Explicit Runge–Kutta methods are registered from :data:`~odekit.solve.tableaus.TABLEAUS`;
other solver families (the proximal implicit schemes) register themselves the same way and
are then available to ``solve``, ``odeint`` and ``odeint_adjoint`` by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .controller import FixedGrid, PIController, SolverProposed
from .errors import InvalidInputError, did_you_mean, number_option
from .norms import Norm, rms_norm
from .runge_kutta import RungeKutta
from .tableaus import TABLEAUS

# Options the loop and the fixed grid handle for every method (docs/engine.md lists their meaning).
FIXED_OPTIONS = ("step_size", "grid_constructor", "perturb", "interp", "max_num_steps", "max_nfe")
ADAPTIVE_OPTIONS = FIXED_OPTIONS + ("first_step", "safety", "ifactor", "dfactor", "pcoeff", "icoeff", "dcoeff", "norm",
                                    "min_step", "max_step", "step_t", "jump_t", "dtype")
# Default caps. Adaptive steps have no count known in advance: the cap is what ends a runaway solve
# (a controller fighting a problem it cannot integrate), after 100_000 steps as in DifferentialEquations.jl.
# A fixed grid's count is known before its first step and checked then; its cap only has to catch a
# grid nobody meant (a step_size typo) and stays far above any grid in use.
DEFAULT_MAX_STEPS = 100_000
DEFAULT_MAX_FIXED_STEPS = 10**7
DEFAULT_MAX_NFE = 2**31 - 1  # evaluations are capped only on request

# The range of every numeric option of the loop and the step-size controllers. The controller's must
# keep it sane: a rejected step shrinks (dfactor < 1, safety ≤ 1, gains that lower the step as the
# error grows), an accepted one may grow (ifactor ≥ 1).
NUMBER_OPTIONS: dict[str, dict[str, Any]] = {
    "step_size": {"gt": 0},
    "first_step": {"gt": 0},
    "safety": {"gt": 0, "le": 1},
    "ifactor": {"ge": 1},
    "dfactor": {"gt": 0, "lt": 1},
    "pcoeff": {"ge": 0},
    "dcoeff": {"ge": 0},
    "icoeff": {"gt": 0},
    "min_step": {"ge": 0},
    "max_step": {"gt": 0, "finite": False},
    "max_num_steps": {"ge": 1, "integer": True},
    "max_nfe": {"ge": 1, "integer": True},
}


@dataclass(frozen=True)
class Method:
    """How to build one named method: its solver, whether it is adaptive, its option names."""

    name: str
    make_solver: Callable[[dict[str, Any], float, float], Any]  # (options, rtol, atol) -> solver
    adaptive: bool
    options: tuple[str, ...]
    description: str = ""
    proposes_steps: bool = False  # the solver chooses its own steps (SolverProposed controller)
    # Where the adjoint's backward solve takes y(t): solved backwards ("backsolve"), or read from the
    # forward dense output ("interpolate": the stiff methods, whose decaying modes grow backwards).
    adjoint_trajectory: str = "backsolve"


# Every method by name: the table in odekit.solve.registry fills it from each family's tuple
# (the families import this module, so the table cannot live here).
METHODS: dict[str, Method] = {}


def register_method(method: Method) -> None:
    """Make a method of your own available to every solve entry point by its name."""
    METHODS[method.name] = method


# RungeKutta holds no per-solve state, so one instance (with its coefficient caches) serves all.
RUNGE_KUTTA_METHODS = tuple(
    Method(
        name=tableau.name,
        make_solver=lambda _opts, _rtol, _atol, _solver=RungeKutta(tableau): _solver,
        adaptive=tableau.adaptive,
        options=ADAPTIVE_OPTIONS if tableau.adaptive else FIXED_OPTIONS,
        description=f"explicit RK, order {tableau.order}, {tableau.stages} stages"
        + (", embedded error estimate" if tableau.adaptive else ", fixed step"),
    )
    for tableau in TABLEAUS.values()
)


def on_fixed_grid(method: Method, options: dict[str, Any]) -> bool:
    """Whether ``method`` steps on a fixed grid with these options (``step_size`` or ``grid_constructor``
    put adaptive methods on one too)."""
    return (not method.adaptive or options.get("step_size") is not None
            or options.get("grid_constructor") is not None)


def resolve(name: str, options: dict[str, Any] | None) -> tuple[Method, dict[str, Any]]:
    """Look ``name`` up and check ``options`` against what it accepts.

    Returns a copy of the options with the numbers of :data:`NUMBER_OPTIONS` checked and made
    Python numbers (those set to ``None`` removed), and ``max_num_steps`` filled in with its
    default where the method takes it.
    """
    if not isinstance(name, str) or name not in METHODS:
        hint = did_you_mean(name, METHODS) if isinstance(name, str) else ""
        raise InvalidInputError(f"unknown method {name!r}{hint}; valid methods: {', '.join(sorted(METHODS))}")
    method = METHODS[name]
    options = dict(options or {})
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        raise InvalidInputError(
            f"unknown option(s) {', '.join(repr(k) + did_you_mean(k, method.options) for k in unknown)} "
            f"for method {name!r}; valid options: {', '.join(method.options)}"
        )
    for key, bounds in NUMBER_OPTIONS.items():
        if key in options:
            if options[key] is None:  # None stands for the default, as torchdiffeq's step_size=None does
                del options[key]
            else:
                options[key] = number_option(key, options[key], **bounds)
    if options.get("min_step", 0.0) > options.get("max_step", math.inf):
        raise InvalidInputError(
            f"need min_step ≤ max_step, got min_step={options['min_step']!r}, max_step={options['max_step']!r}")
    if "max_num_steps" in method.options:
        options.setdefault("max_num_steps",
                           DEFAULT_MAX_FIXED_STEPS if on_fixed_grid(method, options) else DEFAULT_MAX_STEPS)
    return method, options


def make_controller(method: Method, options: dict[str, Any], rtol, atol, norm: Norm, *,
                    grid: list[float] | None = None, open_ended: bool = False):
    """The step-size controller for ``method`` configured from ``options``.

    A ``step_size`` (or a ``grid``) puts any method, adaptive ones included, on a fixed grid.
    ``open_ended`` (event mode) lets a fixed grid run past the last output time. ``options`` are
    the ones :func:`resolve` returned.
    """
    if on_fixed_grid(method, options):
        return FixedGrid(options.get("step_size"), grid=None if grid is None else tuple(grid), open_ended=open_ended,
                         max_steps=options.get("max_num_steps", math.inf))
    pi = pi_controller(options, rtol, atol, norm)
    return SolverProposed(pi) if method.proposes_steps else pi


# The options that configure a PIController (the rest of ADAPTIVE_OPTIONS belong to the loop).
PI_OPTIONS = ("safety", "ifactor", "dfactor", "pcoeff", "icoeff", "dcoeff", "first_step", "min_step", "max_step")


def pi_controller(options: dict[str, Any], rtol, atol, norm: Norm = rms_norm) -> PIController:
    """The PI(D) controller the checked ``options`` describe (rtol/atol checked by the controller)."""
    return PIController(rtol=rtol, atol=atol, norm=norm, **{k: options[k] for k in PI_OPTIONS if k in options})


@dataclass(frozen=True)
class LoopOptions:
    """The options the integration loop itself reads (validated once per solve)."""

    cubic: bool = False
    perturb: bool = False
    step_t: tuple[float, ...] = ()
    jump_t: tuple[float, ...] = ()
    grid_constructor: Callable | None = None

    @property
    def breakpoints(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        return (self.step_t, self.jump_t) if self.step_t or self.jump_t else None


def _times_option(options: dict[str, Any], key: str) -> tuple[float, ...]:
    value = options.get(key)
    if value is None:
        return ()
    try:
        values = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float64)
        points = tuple(float(x) for x in values.reshape(-1).tolist())
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInputError(f"option {key} must be a 1-D tensor or sequence of times, got {value!r}") from None
    if not all(math.isfinite(x) for x in points):
        raise InvalidInputError(f"option {key} contains non-finite times: {points}")
    return points


def loop_options(options: dict[str, Any]) -> LoopOptions:
    """Check ``interp``, ``perturb``, ``step_t``, ``jump_t``, ``grid_constructor`` and ``dtype`` and
    return what the loop needs."""
    interp = options.get("interp", "linear")
    if interp not in ("linear", "cubic"):
        raise InvalidInputError(f"option interp must be 'linear' or 'cubic', got {interp!r}")
    perturb = options.get("perturb", False)
    if not isinstance(perturb, bool):
        raise InvalidInputError(f"option perturb must be True or False, got {perturb!r}")
    grid_constructor = options.get("grid_constructor")
    if grid_constructor is not None:
        if not callable(grid_constructor):
            raise InvalidInputError("option grid_constructor must be a callable (f, y0, t) -> grid of times")
        if options.get("step_size") is not None:
            raise InvalidInputError("options step_size and grid_constructor exclude each other; pass one")
    dtype = options.get("dtype")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InvalidInputError(f"option dtype must be a floating torch dtype (e.g. torch.float64), got {dtype!r}")
    return LoopOptions(interp == "cubic", perturb, _times_option(options, "step_t"), _times_option(options, "jump_t"),
                       grid_constructor)


def positive_int_option(options: dict[str, Any], key: str, default: int) -> int:
    """``options[key]`` (or ``default``), checked to be a positive integer (``True`` is not one)."""
    return number_option(key, options.get(key, default), ge=1, integer=True)


def step_caps(options: dict[str, Any]) -> tuple[int, int]:
    """``(max_steps, max_nfe)`` from the options :func:`resolve` returned (checked and defaulted there)."""
    return options.get("max_num_steps", DEFAULT_MAX_STEPS), options.get("max_nfe", DEFAULT_MAX_NFE)
