"""The odekit solver engine.

``solve`` is the entry point; ``odeint``/``odeint_adjoint`` are torchdiffeq-compatible fronts.
Layers: tableaus (data) → Runge–Kutta step → controllers → the integration loop → adjoint.
"""

from . import registry  # noqa: F401  (the table of built-in methods)
from .api import solve
from .callbacks import StepCallbacks
from .compat import odeint, odeint_adjoint, odeint_dense, odeint_event
from .errors import (
    InnerSolveError,
    InvalidInputError,
    MaxStepsExceededError,
    NonFiniteError,
    SolverError,
    StepSizeUnderflowError,
    VectorFieldError,
)
from .methods import METHODS, Method, register_method
from .solution import Solution, SolveStats, StatsRecorder, Status, record_stats
from .spec import (
    BDF,
    LBFGS,
    NDF,
    RK4,
    AdaptiveHeun,
    Anderson,
    Auto,
    Backprop,
    BacksolveAdjoint,
    Bosh3,
    Dopri5,
    Dopri8,
    Euler,
    ExplicitAdams,
    Fehlberg2,
    FixedGrid,
    FixedPoint,
    FletcherReeves,
    GradientDescent,
    Heun2,
    Heun3,
    ImplicitAdams,
    ImplicitDifferentiation,
    InnerSolver,
    Midpoint,
    Nesterov,
    Newton,
    NewtonKrylov,
    PIController,
    ProxBDF,
    Proximal,
    RecursiveCheckpoint,
    Solver,
    SolveSettings,
    Tsit5,
)
from .tableau import ButcherTableau
from .tableaus import TABLEAUS

__all__ = [
    "solve", "odeint", "odeint_adjoint", "odeint_event", "odeint_dense", "StepCallbacks", "Solution", "SolveStats",
    "StatsRecorder", "Status", "record_stats",
    "METHODS", "Method", "register_method", "ButcherTableau", "TABLEAUS", "SolverError",
    "InvalidInputError", "VectorFieldError", "NonFiniteError", "StepSizeUnderflowError",
    "MaxStepsExceededError", "InnerSolveError",
    # the solve as objects (odekit.solve.spec)
    "Solver", "Proximal", "Euler", "Midpoint", "RK4", "Heun2", "Heun3", "Bosh3", "AdaptiveHeun", "Fehlberg2",
    "Dopri5", "Tsit5", "Dopri8", "ExplicitAdams", "ImplicitAdams", "NDF", "BDF", "Auto", "ProxBDF",
    "GradientDescent", "FixedPoint", "Nesterov", "FletcherReeves", "LBFGS", "Anderson", "Newton", "NewtonKrylov",
    "InnerSolver", "PIController",
    "FixedGrid", "Backprop", "BacksolveAdjoint", "RecursiveCheckpoint", "ImplicitDifferentiation", "SolveSettings",
]
