"""The registry of solver methods: name → how to build the solver and its controller.

Explicit Runge–Kutta methods are registered from :data:`~odekit.solve.tableaus.TABLEAUS`;
other solver families (the proximal implicit schemes) register themselves the same way and
are then available to ``solve``, ``odeint`` and ``odeint_adjoint`` by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .controller import FixedGrid, PIController
from .errors import InvalidInputError
from .norms import Norm
from .runge_kutta import RungeKutta
from .tableaus import TABLEAUS

# Options the loop and the fixed grid handle for every method (docs/engine.md lists their meaning).
FIXED_OPTIONS = ("step_size", "grid_constructor", "perturb", "interp", "max_num_steps", "max_nfe")
ADAPTIVE_OPTIONS = FIXED_OPTIONS + ("first_step", "safety", "ifactor", "dfactor", "pcoeff", "icoeff", "norm",
                                    "min_step", "max_step", "step_t", "jump_t", "dtype")
DEFAULT_MAX_STEPS = 2**31 - 1


@dataclass(frozen=True)
class Method:
    """How to build one named method: its solver, whether it is adaptive, its option names."""

    name: str
    make_solver: Callable[[dict[str, Any], float, float], Any]  # (options, rtol, atol) -> solver
    adaptive: bool
    options: tuple[str, ...]
    description: str = ""


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> None:
    """Make ``method`` available to every solve entry point by its name."""
    METHODS[method.name] = method


for _tableau in TABLEAUS.values():
    # RungeKutta holds no per-solve state, so one instance (with its coefficient caches) serves all.
    register_method(
        Method(
            name=_tableau.name,
            make_solver=lambda _opts, _rtol, _atol, _solver=RungeKutta(_tableau): _solver,
            adaptive=_tableau.adaptive,
            options=ADAPTIVE_OPTIONS if _tableau.adaptive else FIXED_OPTIONS,
            description=f"explicit RK, order {_tableau.order}, {_tableau.stages} stages"
            + (", embedded error estimate" if _tableau.adaptive else ", fixed step"),
        )
    )


def resolve(name: str, options: dict[str, Any] | None) -> tuple[Method, dict[str, Any]]:
    """Look ``name`` up and check ``options`` against what it accepts."""
    if not isinstance(name, str) or name not in METHODS:
        raise InvalidInputError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    method = METHODS[name]
    options = dict(options or {})
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        raise InvalidInputError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for method {name!r}; "
            f"valid options: {', '.join(method.options)}"
        )
    return method, options


def make_controller(method: Method, options: dict[str, Any], rtol: float, atol: float, norm: Norm):
    """The step-size controller for ``method`` configured from ``options``.

    A ``step_size`` option puts any method, adaptive ones included, on a fixed grid.
    """
    if not method.adaptive or options.get("step_size") is not None:
        return FixedGrid(options.get("step_size"))
    keys = ("first_step", "safety", "ifactor", "dfactor", "pcoeff", "icoeff")
    return PIController(rtol=rtol, atol=atol, norm=norm, **{k: options[k] for k in keys if k in options})


def step_caps(options: dict[str, Any]) -> tuple[int, int]:
    """``(max_steps, max_nfe)`` from the options, validated."""
    caps = []
    for key in ("max_num_steps", "max_nfe"):
        value = options.get(key, DEFAULT_MAX_STEPS)
        if not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"option {key} must be a positive integer, got {value!r}")
        caps.append(value)
    return caps[0], caps[1]
