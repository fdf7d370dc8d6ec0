"""The user's ``f(t, y)`` adapted to the engine: float times in, flat vectors in and out, counted."""

from __future__ import annotations

import math
from typing import Callable

import torch

from .state import State, StateLayout

UserField = Callable[[torch.Tensor, State], State]


def side_of(c: float) -> int:
    """The ``side`` of an evaluation at ``t0 + c·h``: ``+1`` at a step's start, ``-1`` at its end, else 0."""
    return 1 if c == 0.0 else (-1 if c == 1.0 else 0)


class VectorField:
    """Calls ``f`` with a time tensor and the state in the user's own structure.

    Times travel through the solver as Python floats (cheap step-size arithmetic); ``f`` is
    handed a 0-d tensor of ``t_dtype``. ``nfe`` counts calls.

    ``side`` says from which side of ``t`` a solver looks: ``+1`` for the first evaluation of a
    step at its start, ``-1`` for an evaluation at its end, ``0`` inside. With ``perturb`` on
    (a fixed-grid ``perturb`` option, or discontinuities declared by ``jump_t``) such times are
    moved to the adjacent representable value of ``t_dtype`` inside the step, so a field that
    jumps at a grid point is sampled on the correct side (torchdiffeq's ``perturb``).
    """

    __slots__ = ("f", "layout", "t_dtype", "nfe", "perturb", "direction")

    def __init__(self, f: UserField, layout: StateLayout, t_dtype: torch.dtype) -> None:
        self.f = f
        self.layout = layout
        self.t_dtype = t_dtype
        self.nfe = 0
        self.perturb = False
        self.direction = 1.0  # +1 forward in time, -1 backward (set by the loop)

    def __call__(self, t: float, y: torch.Tensor, side: int = 0) -> torch.Tensor:
        self.nfe += 1
        layout = self.layout
        tt = torch.full((), t, dtype=self.t_dtype, device=layout.device)
        if side and self.perturb:
            toward = torch.full((), side * self.direction * math.inf, dtype=self.t_dtype, device=layout.device)
            tt = torch.nextafter(tt, toward)
        if layout.is_tuple:
            return layout.flatten_derivative(self.f(tt, layout.unflatten(y)), t)
        # The single-tensor case inlined: this runs once per stage, so every call saved counts.
        # Anything but a plain tensor of the state's shape, dtype and device takes the full check
        # (which accepts tensor subclasses and raises for the rest).
        shape = layout.shapes[0]
        out = self.f(tt, y.view(shape))
        if (type(out) is not torch.Tensor or out.shape != shape or out.dtype != layout.dtype
                or out.device != layout.device):
            return layout.flatten_derivative(out, t)
        return out.reshape(-1)
