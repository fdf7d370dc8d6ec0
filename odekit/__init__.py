"""odekit: faster and more accurate neural ODEs (Xia 2023), on one solver engine.

>>> import torch, odekit
>>> ys = odekit.odeint(lambda t, y: -y, torch.ones(1), torch.linspace(0, 1, 3))
"""

from .solve import (  # noqa: I001
    LBFGS,
    RK4,
    Backprop,
    BacksolveAdjoint,
    Dopri5,
    Dopri8,
    FixedGrid,
    NDF,
    Auto,
    FletcherReeves,
    NewtonKrylov,
    PIController,
    Proximal,
    ProxBDF,
    ImplicitDifferentiation,
    RecursiveCheckpoint,
    Solver,
    SolveSettings,
    Tsit5,
    InvalidInputError,
    MaxStepsExceededError,
    NonFiniteError,
    Solution,
    SolverError,
    SolveStats,
    Status,
    StepSizeUnderflowError,
    VectorFieldError,
    odeint,
    odeint_adjoint,
    record_stats,
    solve,
)

__version__ = "0.1.0"

__all__ = [
    "solve", "odeint", "odeint_adjoint", "record_stats", "Solution", "SolveStats", "Status", "SolverError",
    "InvalidInputError", "VectorFieldError", "NonFiniteError", "StepSizeUnderflowError",
    "MaxStepsExceededError", "__version__",
    # the solve as objects; every one is in odekit.solve
    "Solver", "Proximal", "RK4", "Dopri5", "Tsit5", "Dopri8", "NDF", "Auto", "ProxBDF", "LBFGS", "FletcherReeves",
    "NewtonKrylov",
    "PIController", "FixedGrid", "Backprop", "BacksolveAdjoint", "RecursiveCheckpoint", "ImplicitDifferentiation",
    "SolveSettings",
]
