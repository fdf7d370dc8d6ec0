"""``ODEBlock``: a continuous-depth layer that integrates its dynamics with the odekit engine."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..solve import SolveStats
from ..solve.spec import SolveSettings
from ..solve.state import State


class ODEBlock(nn.Module):
    """Integrate ``dynamics`` from ``t = 0`` to ``t_end`` and return the final state.

    How it solves is one :class:`~odekit.solve.spec.SolveSettings` (``settings=``, or its fields as
    keywords: ``method``, ``rtol``, ``gradient``, ``solver``…; default: dopri5 at 1e-3 with the
    adjoint); each field also reads and writes as an attribute (``block.rtol = 1e-5``). The
    counters of the latest call are in :attr:`stats` (``nfe``, and ``nfe_backward`` once
    ``backward()`` has run), so a training loop reads forward and backward NFE per batch without
    extra code.
    """

    def __init__(self, dynamics: nn.Module, t_end: float = 1.0, *, settings: SolveSettings | None = None,
                 **solve_keywords: Any) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.t_end = t_end
        self.settings = SolveSettings.of(settings, solve_keywords, gradient="adjoint")
        self.stats = SolveStats(method=self.settings.method)

    def forward(self, state: State, times: torch.Tensor | None = None,
                adjoint_params: tuple[torch.Tensor, ...] | None = None, args: Any = None) -> State:
        """The state at ``t_end`` (or, given ``times``, the states at those times, stacked on dim 0).

        ``args`` reach the dynamics as ``dynamics(t, y, args)``, with gradients. ``adjoint_params``:
        the tensors the dynamics use directly, when they are not just its parameters or in ``args``.
        """
        reference = state[0] if isinstance(state, tuple) else state
        t = times if times is not None else torch.tensor([0.0, self.t_end], dtype=reference.dtype,
                                                         device=reference.device)
        params = self.dynamics.parameters() if adjoint_params is None else adjoint_params
        sol = self.settings.solve(self.dynamics, state, t, args=args,
                                  adjoint_params=tuple(p for p in params if p.requires_grad))
        self.stats = sol.stats
        if times is not None:
            return sol.ys
        return tuple(y[-1] for y in sol.ys) if isinstance(sol.ys, tuple) else sol.ys[-1]

    def extra_repr(self) -> str:
        s = self.settings
        return f"t_end={self.t_end}, method={s.method}, rtol={s.rtol}, atol={s.atol}, gradient={s.gradient}"


def _settings_property(name: str) -> property:
    def get(block: ODEBlock) -> Any:
        return getattr(block.settings, name)

    def set_(block: ODEBlock, value: Any) -> None:
        block.settings = dataclasses.replace(block.settings, **{name: value})

    return property(get, set_, doc=f"``settings.{name}``")


for _field in dataclasses.fields(SolveSettings):
    setattr(ODEBlock, _field.name, _settings_property(_field.name))


class OneBlock:
    """For a model whose whole solve is one ``self.block`` (an :class:`ODEBlock`): its depth and the
    counters of its latest call, so training loops read ``model.stats.nfe`` / ``.nfe_backward``."""

    block: ODEBlock

    @property
    def t_end(self) -> float:
        return self.block.t_end

    @property
    def stats(self) -> SolveStats:
        """Counters of the latest solve (``nfe``; ``nfe_backward`` after ``backward()``)."""
        return self.block.stats
