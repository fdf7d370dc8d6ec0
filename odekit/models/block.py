"""``ODEBlock``: a continuous-depth layer that integrates its dynamics with the odekit engine."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..solve import SolveStats, solve
from ..solve.state import State


class ODEBlock(nn.Module):
    """Integrate ``dynamics`` from ``t = 0`` to ``t_end`` and return the final state.

    Any engine method and either gradient mode can be used. The counters of the latest call
    are in :attr:`stats` (``nfe``, and ``nfe_backward`` once ``backward()`` has run), so a
    training loop reads forward and backward NFE per batch without extra code.
    """

    def __init__(
        self,
        dynamics: nn.Module,
        t_end: float = 1.0,
        *,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        gradient: str = "adjoint",
        options: dict[str, Any] | None = None,
        adjoint_options: dict[str, Any] | None = None,
        adjoint_method: str | None = None,
        adjoint_rtol: float | None = None,
        adjoint_atol: float | None = None,
    ) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.t_end = t_end
        self.method, self.rtol, self.atol, self.gradient = method, rtol, atol, gradient
        self.options, self.adjoint_options = options, adjoint_options
        self.adjoint_method, self.adjoint_rtol, self.adjoint_atol = adjoint_method, adjoint_rtol, adjoint_atol
        self.stats = SolveStats(method=method)

    def forward(self, state: State, times: torch.Tensor | None = None,
                adjoint_params: tuple[torch.Tensor, ...] | None = None) -> State:
        """The state at ``t_end`` (or, given ``times``, the states at those times, stacked on dim 0).

        ``adjoint_params``: the tensors the dynamics use directly, when they are not just its
        parameters (tensors computed from the input, say); the adjoint carries gradients back to them.
        """
        reference = state[0] if isinstance(state, tuple) else state
        t = times if times is not None else torch.tensor([0.0, self.t_end], dtype=reference.dtype,
                                                         device=reference.device)
        sol = solve(
            self.dynamics, state, t, method=self.method, rtol=self.rtol, atol=self.atol, gradient=self.gradient,
            options=self.options, adjoint_options=self.adjoint_options, adjoint_method=self.adjoint_method,
            adjoint_rtol=self.adjoint_rtol, adjoint_atol=self.adjoint_atol,
            adjoint_params=tuple(p for p in (self.dynamics.parameters() if adjoint_params is None else adjoint_params)
                                 if p.requires_grad),
        )
        self.stats = sol.stats
        if times is not None:
            return sol.ys
        return tuple(y[-1] for y in sol.ys) if isinstance(sol.ys, tuple) else sol.ys[-1]

    def extra_repr(self) -> str:
        return f"t_end={self.t_end}, method={self.method}, rtol={self.rtol}, atol={self.atol}, gradient={self.gradient}"
