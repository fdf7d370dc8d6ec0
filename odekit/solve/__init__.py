"""The odekit solver engine.

``solve`` is the entry point; ``odeint``/``odeint_adjoint`` are torchdiffeq-compatible fronts.
Layers: tableaus (data) → Runge–Kutta step → controllers → the integration loop → adjoint.
"""

from . import adams, implicit_rk, proximal, scipy_solver  # noqa: F401  (register these method families)
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
from .tableau import ButcherTableau
from .tableaus import TABLEAUS

__all__ = [
    "solve", "odeint", "odeint_adjoint", "odeint_event", "odeint_dense", "StepCallbacks", "Solution", "SolveStats",
    "StatsRecorder", "Status", "record_stats",
    "METHODS", "Method", "register_method", "ButcherTableau", "TABLEAUS", "SolverError",
    "InvalidInputError", "VectorFieldError", "NonFiniteError", "StepSizeUnderflowError",
    "MaxStepsExceededError", "InnerSolveError",
]
