"""The solve as three objects: a solver, a step-size controller and a gradient method (diffrax's design).

``solve(f, y0, t, solver=Dopri5(), controller=PIController(rtol=1e-6, atol=1e-8),
gradient=RecursiveCheckpoint())`` says what ``method="dopri5", rtol=1e-6, atol=1e-8,
gradient="checkpoint"`` says, with each piece holding its own settings: the proximal solver holds
its inner solver (``ProxBDF(order=2, inner=LBFGS(memory=10))``), the backsolve adjoint its own
solver, tolerances and norm. The strings stay as the short form; :func:`expand` turns the
objects into it, so both forms take the same steps, give the same values and count the same
evaluations, and are checked by the same code.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .controller import FixedGrid, PIController
from .errors import InvalidInputError, did_you_mean
from .inner import InnerSolver
from .methods import PI_OPTIONS
from .norms import rms_norm


@dataclass(frozen=True)
class Solver:
    """A method by its name (``odekit methods``) with its own options (``max_order``, ``max_iters``, …)."""

    method: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def method_options(self) -> dict[str, Any]:
        return dict(self.options)


# The explicit Runge–Kutta pairs and fixed-step methods, and the other families, by their usual names.
Euler = functools.partial(Solver, "euler")
Midpoint = functools.partial(Solver, "midpoint")
RK4 = functools.partial(Solver, "rk4")
Heun2 = functools.partial(Solver, "heun2")
Heun3 = functools.partial(Solver, "heun3")
Bosh3 = functools.partial(Solver, "bosh3")
AdaptiveHeun = functools.partial(Solver, "adaptive_heun")
Fehlberg2 = functools.partial(Solver, "fehlberg2")
Dopri5 = functools.partial(Solver, "dopri5")
Tsit5 = functools.partial(Solver, "tsit5")
Dopri8 = functools.partial(Solver, "dopri8")
ExplicitAdams = functools.partial(Solver, "explicit_adams")
ImplicitAdams = functools.partial(Solver, "implicit_adams")
# The stiff solvers (options: max_order, jacobian, linear_solver, …) and the automatic switch.
NDF = functools.partial(Solver, "ndf")
BDF = functools.partial(Solver, "bdf")
Auto = functools.partial(Solver, "auto")

# Inner solvers of the proximal methods (thesis §5.3): an InnerSolver with its method set.
GradientDescent = functools.partial(InnerSolver, "gd")
FixedPoint = functools.partial(InnerSolver, "fixed_point")
Nesterov = functools.partial(InnerSolver, "nesterov")
FletcherReeves = functools.partial(InnerSolver, "fr")
LBFGS = functools.partial(InnerSolver, "lbfgs")
Anderson = functools.partial(InnerSolver, "anderson")
Newton = functools.partial(InnerSolver, "newton")
NewtonKrylov = functools.partial(InnerSolver, "newton_krylov")

# InnerSolver field → the method option that sets it.
_INNER_OPTIONS = {"method": "inner", "step": "inner_step", "tol": "inner_tol", "res_tol": "inner_res_tol",
                  "max_iters": "inner_max_iters", "memory": "inner_memory", "krylov_rtol": "krylov_rtol",
                  "krylov_dim": "krylov_dim"}


@dataclass(frozen=True)
class Proximal:
    """A proximal implicit scheme (thesis ch. 5) with its inner solver as a field.

    ``scheme`` is a fixed-step scheme (``"prox_be"``, ``"prox_cn"``, ``"prox_bdf2"``…, step from a
    :class:`FixedGrid` controller) or ``"prox_bdf"``, the adaptive BDF of ``order`` 1–4.
    """

    scheme: str = "prox_bdf"
    order: int | None = None
    inner: InnerSolver = field(default_factory=InnerSolver)
    warm_start: str = "extrapolate"
    jvp: str = "finite_difference"
    on_inner_failure: str = "warn"
    start: str = "one_step"  # BDF3/4 on a fixed grid: "lower_order" starts with BE, BDF2, … (the authors')

    @property
    def method(self) -> str:
        return self.scheme

    def method_options(self) -> dict[str, Any]:
        defaults = InnerSolver()
        options = {option: getattr(self.inner, name) for name, option in _INNER_OPTIONS.items()
                   if getattr(self.inner, name) != getattr(defaults, name) or name == "method"}
        options.update(warm_start=self.warm_start, jvp=self.jvp, on_inner_failure=self.on_inner_failure)
        if self.start != "one_step":
            options["start"] = self.start
        if self.order is not None:
            options["order"] = self.order
        return options


ProxBDF = functools.partial(Proximal, "prox_bdf")


@dataclass(frozen=True)
class Backprop:
    """Differentiate the solver's operations (memory grows with the steps)."""


@dataclass(frozen=True)
class BacksolveAdjoint:
    """The continuous adjoint solved backwards, with its own solver, controller and norm.

    ``solver``/``controller`` default to the forward ones; ``seminorm`` leaves the parameter
    adjoints out of the error estimate; ``params`` are the tensors ``f`` depends on (default:
    ``f.parameters()`` of an ``nn.Module``).
    """

    solver: Solver | Proximal | None = None
    controller: PIController | FixedGrid | None = None
    seminorm: bool = False
    params: Sequence[torch.Tensor] | None = None


@dataclass(frozen=True)
class RecursiveCheckpoint:
    """Backprop's gradient in O(√steps) memory, re-taking the steps from checkpoints."""

    params: Sequence[torch.Tensor] | None = None


@dataclass(frozen=True)
class ImplicitDifferentiation:
    """Backprop through the steps, each converged implicit stage differentiated by the implicit
    function theorem (proximal, implicit Runge–Kutta and BDF/NDF methods): memory does not grow
    with the inner iterations."""


GRADIENT_METHODS = {"backprop": Backprop, "adjoint": BacksolveAdjoint, "checkpoint": RecursiveCheckpoint,
                    "implicit": ImplicitDifferentiation}

def _controller_settings(controller: PIController | FixedGrid | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(rtol/atol keywords, options)`` that say what ``controller`` says."""
    if controller is None:
        return {}, {}
    if isinstance(controller, FixedGrid):
        if controller.grid is not None or controller.open_ended:
            raise InvalidInputError("FixedGrid as a controller takes step_size only (a grid of your own: "
                                    "options={'grid_constructor': …})")
        return {}, {} if controller.step_size is None else {"step_size": controller.step_size}
    if isinstance(controller, PIController):
        defaults = {f.name: f.default for f in dataclasses.fields(PIController)}
        options = {k: getattr(controller, k) for k in PI_OPTIONS if getattr(controller, k) != defaults[k]}
        if controller.norm is not rms_norm:
            options["norm"] = controller.norm
        return {"rtol": controller.rtol, "atol": controller.atol}, options
    raise InvalidInputError(f"controller must be a PIController or a FixedGrid, got {controller!r}")


def _solver_settings(solver: Solver | Proximal | None) -> tuple[str | None, dict[str, Any]]:
    if solver is None:
        return None, {}
    if not isinstance(solver, (Solver, Proximal)):
        raise InvalidInputError(f"solver must be a Solver (e.g. odekit.Dopri5()) or a Proximal (e.g. "
                                f"odekit.ProxBDF(order=2)), got {solver!r}")
    return solver.method, solver.method_options()


def expand(settings: dict[str, Any]) -> dict[str, Any]:
    """``solve``'s keywords with ``solver``, ``controller`` and a gradient object replaced by the short form.

    Objects and the short-form keywords they replace exclude each other: passing both is an error.
    """
    solver, controller, gradient = settings.pop("solver"), settings.pop("controller"), settings["gradient"]
    method, options = _solver_settings(solver)
    tolerances, control = _controller_settings(controller)
    if solver is not None:
        settings["method"] = method
    if tolerances:
        settings.update(tolerances)
    if options or control:
        if settings["options"]:
            raise InvalidInputError("pass the method's options through the solver and controller objects, or "
                                    "options=…, not both")
        settings["options"] = {**options, **control}
    if isinstance(gradient, Backprop):
        settings["gradient"] = "backprop"
    elif isinstance(gradient, ImplicitDifferentiation):
        settings["gradient"] = "implicit"
    elif isinstance(gradient, RecursiveCheckpoint):
        settings.update(gradient="checkpoint", adjoint_params=gradient.params)
    elif isinstance(gradient, BacksolveAdjoint):
        backward_method, backward_options = _solver_settings(gradient.solver)
        backward_tolerances, backward_control = _controller_settings(gradient.controller)
        adjoint_options = None
        if gradient.solver is not None or gradient.controller is not None or gradient.seminorm:
            adjoint_options = {**(backward_options if gradient.solver is not None else options),
                               **(backward_control if gradient.controller is not None else control)}
            if gradient.seminorm:
                adjoint_options["norm"] = "seminorm"
        settings.update(gradient="adjoint", adjoint_params=gradient.params, adjoint_method=backward_method,
                        adjoint_rtol=backward_tolerances.get("rtol"), adjoint_atol=backward_tolerances.get("atol"),
                        adjoint_options=adjoint_options)
    elif not isinstance(gradient, str):
        raise InvalidInputError(f"gradient must be one of {tuple(GRADIENT_METHODS)} or Backprop(), "
                                f"BacksolveAdjoint(…), RecursiveCheckpoint(…), ImplicitDifferentiation(), "
                                f"got {gradient!r}")
    return settings


@dataclass(frozen=True)
class SolveSettings:
    """How to solve, as one value that models and experiments pass around: every keyword of
    :func:`~odekit.solve.solve` that is not per call (not ``f``, ``y0``, ``t``, ``args``…).

    The defaults are the training ones (tolerances 1e-3, backprop), not ``solve``'s. Either the
    short form (``method``, ``rtol``…) or the objects (``solver``, ``controller``, a gradient
    object) may be used, as in ``solve``.
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    gradient: Any = "backprop"
    options: Mapping[str, Any] | None = None
    adjoint_method: str | None = None
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    adjoint_options: Mapping[str, Any] | None = None
    solver: Solver | Proximal | None = None
    controller: PIController | FixedGrid | None = None
    per_sample: bool = False
    compile: bool = False

    @classmethod
    def of(cls, settings: SolveSettings | None, keywords: Mapping[str, Any],
           **defaults: Any) -> SolveSettings:
        """``settings``, or the settings ``keywords`` (over ``defaults``) name; not both.

        The one place a model turns its ``**solve_keywords`` into settings, with a clear error for
        a keyword that is not a setting.
        """
        if settings is not None:
            if keywords:
                raise InvalidInputError(f"pass either settings=SolveSettings(…) or the keywords "
                                        f"{', '.join(map(repr, keywords))}, not both")
            return settings
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            named = ", ".join(repr(k) + did_you_mean(k, names) for k in unknown)
            raise InvalidInputError(f"unknown solve setting(s) {named}; settings: {', '.join(sorted(names))}")
        return cls(**{**defaults, **keywords})

    def with_options(self, **options: Any) -> SolveSettings:
        """These settings with ``options`` added to the forward options (and to the backward ones, if set)."""
        backward = None if self.adjoint_options is None else {**self.adjoint_options, **options}
        return dataclasses.replace(self, options={**(self.options or {}), **options}, adjoint_options=backward)

    def solve(self, f, y0, t, **per_call: Any):
        """:func:`~odekit.solve.solve` with these settings; ``per_call`` adds ``args``, ``adjoint_params``…"""
        from .api import solve

        keywords = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        keywords["options"] = None if self.options is None else dict(self.options)
        keywords["adjoint_options"] = None if self.adjoint_options is None else dict(self.adjoint_options)
        return solve(f, y0, t, **keywords, **per_call)


__all__ = [
    "BDF",
    "LBFGS",
    "NDF",
    "RK4",
    "AdaptiveHeun",
    "Anderson",
    "Auto",
    "Backprop",
    "BacksolveAdjoint",
    "Bosh3",
    "Dopri5",
    "Dopri8",
    "Euler",
    "ExplicitAdams",
    "Fehlberg2",
    "FixedGrid",
    "FixedPoint",
    "FletcherReeves",
    "GradientDescent",
    "Heun2",
    "Heun3",
    "ImplicitAdams",
    "InnerSolver",
    "Midpoint",
    "Nesterov",
    "Newton",
    "NewtonKrylov",
    "PIController",
    "ProxBDF",
    "Proximal",
    "RecursiveCheckpoint",
    "SolveSettings",
    "Solver",
    "Tsit5",
    "expand",
]
