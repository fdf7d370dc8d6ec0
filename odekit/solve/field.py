"""The user's ``f(t, y)`` adapted to the engine: float times in, flat vectors in and out, counted."""

from __future__ import annotations

from typing import Callable

import torch

from .state import State, StateLayout

UserField = Callable[[torch.Tensor, State], State]


class VectorField:
    """Calls ``f`` with a time tensor and the state in the user's own structure.

    Times travel through the solver as Python floats (cheap step-size arithmetic). ``f`` is
    handed a 0-d tensor; when gradients with respect to the output times are wanted, that
    tensor is built as ``anchor + (t - anchor_value)`` so autograd sees how every evaluation
    time moves with the integration start. ``nfe`` counts calls.
    """

    __slots__ = ("f", "layout", "t_dtype", "anchor", "anchor_value", "nfe")

    def __init__(
        self,
        f: UserField,
        layout: StateLayout,
        t_dtype: torch.dtype,
        anchor: torch.Tensor | None = None,
        anchor_value: float = 0.0,
    ) -> None:
        self.f = f
        self.layout = layout
        self.t_dtype = t_dtype
        self.anchor = anchor
        self.anchor_value = anchor_value
        self.nfe = 0

    def time(self, t: float) -> torch.Tensor:
        if self.anchor is None:
            return torch.full((), t, dtype=self.t_dtype, device=self.layout.device)
        return self.anchor + (t - self.anchor_value)

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        layout = self.layout
        return layout.flatten_derivative(self.f(self.time(t), layout.unflatten(y)), t)
