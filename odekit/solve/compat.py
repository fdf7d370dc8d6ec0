"""torchdiffeq-compatible front: ``odeint`` and ``odeint_adjoint`` over :func:`solve`.

Same signatures, defaults (dopri5, rtol 1e-7, atol 1e-9) and output layout as torchdiffeq, so
``from torchdiffeq import odeint`` becomes ``from odekit import odeint``. Counters are read with
:func:`odekit.record_stats` instead of instrumenting ``func``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .api import solve
from .state import State


def odeint(
    func,
    y0: State,
    t: torch.Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
) -> State:
    """Solve ``dy/dt = func(t, y)`` and return the states at ``t``, differentiable by backprop."""
    return solve(func, y0, t, method=method or "dopri5", rtol=rtol, atol=atol, options=options).ys


def odeint_adjoint(
    func,
    y0: State,
    t: torch.Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
) -> State:
    """Like :func:`odeint`, with gradients from the continuous adjoint (constant memory in steps)."""
    return solve(
        func, y0, t, method=method or "dopri5", rtol=rtol, atol=atol, options=options, gradient="adjoint",
        adjoint_params=adjoint_params, adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
        adjoint_atol=adjoint_atol, adjoint_options=adjoint_options,
    ).ys
