"""Step callbacks: user code called around every step of a solve (torchdiffeq's ``callback_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .integrate import LoopHooks
from .state import State, StateLayout

Callback = Callable[[torch.Tensor, State, torch.Tensor], None]


@dataclass
class StepCallbacks:
    """Functions ``(t0, y0, dt)`` called on the forward solve and on the adjoint's backward solve.

    ``step`` runs before every attempted step, ``accept`` / ``reject`` after it (adaptive
    methods only: a fixed grid accepts every step). ``t0`` and ``dt`` are 0-d tensors; ``y0``
    has the structure of the state (on the backward solve, the augmented adjoint state as one
    flat tensor ``[y, a, g]``). Callbacks observe; they must not modify ``y0``.
    """

    step: Callback | None = None
    accept: Callback | None = None
    reject: Callback | None = None
    step_adjoint: Callback | None = None
    accept_adjoint: Callback | None = None
    reject_adjoint: Callback | None = None

    def hooks(self, layout: StateLayout, t_dtype: torch.dtype, adjoint: bool = False) -> LoopHooks:
        """The loop's hooks on flat states and float times, for the forward or the backward solve."""
        names = ("step_adjoint", "accept_adjoint", "reject_adjoint") if adjoint else ("step", "accept", "reject")
        structure = (lambda flat: flat) if adjoint else layout.unflatten

        def wrap(callback: Callback | None):
            if callback is None:
                return None

            def hook(t0: float, y0: torch.Tensor, dt: float) -> None:
                device = y0.device
                callback(torch.tensor(t0, dtype=t_dtype, device=device), structure(y0),
                         torch.tensor(dt, dtype=t_dtype, device=device))

            return hook

        return LoopHooks(*(wrap(getattr(self, name)) for name in names))

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__dataclass_fields__)
