"""The user's ``f(t, y)`` adapted to the engine: float times in, flat vectors in and out, counted."""

from __future__ import annotations

from typing import Callable

import torch

from .state import State, StateLayout

UserField = Callable[[torch.Tensor, State], State]


class VectorField:
    """Calls ``f`` with a time tensor and the state in the user's own structure.

    Times travel through the solver as Python floats (cheap step-size arithmetic); ``f`` is
    handed a 0-d tensor. ``nfe`` counts calls.
    """

    __slots__ = ("f", "layout", "t_dtype", "nfe")

    def __init__(self, f: UserField, layout: StateLayout, t_dtype: torch.dtype) -> None:
        self.f = f
        self.layout = layout
        self.t_dtype = t_dtype
        self.nfe = 0

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        layout = self.layout
        tt = torch.full((), t, dtype=self.t_dtype, device=layout.device)
        if layout.is_tuple:
            return layout.flatten_derivative(self.f(tt, layout.unflatten(y)), t)
        # The single-tensor case inlined: this runs once per stage, so every call saved counts.
        shape = layout.shapes[0]
        out = self.f(tt, y.view(shape))
        if type(out) is not torch.Tensor or out.shape != shape or out.dtype != layout.dtype:
            raise layout.mismatch(out, t)
        return out.reshape(-1)
