"""Flattening of tensor or tuple-of-tensor states into one vector, and back.

The engine steps one flat vector so that every Runge–Kutta combination is a single matrix
product, whatever the user's state looks like (HBNODE's ``(h, m)`` pair, a batch of images, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from .errors import InvalidInputError, VectorFieldError

State = Union[torch.Tensor, tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class StateLayout:
    """Shapes of the components of a state, and how they sit in the flat vector."""

    shapes: tuple[torch.Size, ...]
    is_tuple: bool
    dtype: torch.dtype
    device: torch.device

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(s.numel() for s in self.shapes)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def real_dtype(self) -> torch.dtype:
        """The dtype of times and tolerances: the state's own, or its real part's for complex states."""
        return torch.empty((), dtype=self.dtype).real.dtype

    @classmethod
    def of(cls, y0: State) -> "StateLayout":
        """Describe ``y0``; raises :class:`InvalidInputError` if it cannot be a state."""
        parts = tuple(y0) if isinstance(y0, (tuple, list)) else (y0,)
        if not parts:
            raise InvalidInputError("y0 is an empty tuple; pass a tensor or a non-empty tuple of tensors")
        for i, p in enumerate(parts):
            where = f"y0[{i}]" if isinstance(y0, (tuple, list)) else "y0"
            if not isinstance(p, torch.Tensor):
                raise InvalidInputError(f"{where} is a {type(p).__name__}; states must be torch tensors")
            if not (p.is_floating_point() or p.is_complex()):
                raise InvalidInputError(
                    f"{where} has dtype {p.dtype}; states must be floating point or complex "
                    "(use .float() or .double())"
                )
        first = parts[0]
        for i, p in enumerate(parts[1:], start=1):
            if p.dtype != first.dtype or p.device != first.device:
                raise InvalidInputError(
                    f"y0[{i}] is {p.dtype} on {p.device} but y0[0] is {first.dtype} on {first.device}; "
                    "all components of a tuple state must share dtype and device"
                )
        return cls(tuple(p.shape for p in parts), isinstance(y0, (tuple, list)), first.dtype, first.device)

    def flatten(self, y: State) -> torch.Tensor:
        if not self.is_tuple:
            return y.reshape(-1)
        return torch.cat([p.reshape(-1) for p in y])

    def unflatten(self, flat: torch.Tensor) -> State:
        if not self.is_tuple:
            return flat.view(self.shapes[0])
        return tuple(p.view(s) for p, s in zip(flat.split(self.sizes), self.shapes))

    def unflatten_stacked(self, flat: torch.Tensor) -> State:
        """``(T, numel)`` → a ``(T, *shape)`` tensor, or a tuple of them (torchdiffeq's layout)."""
        lead = flat.shape[0]
        if not self.is_tuple:
            return flat.view(lead, *self.shapes[0])
        return tuple(p.reshape(lead, *s) for p, s in zip(flat.split(self.sizes, dim=1), self.shapes))

    def flatten_derivative(self, out: State, t: float) -> torch.Tensor:
        """Check what ``f`` returned against the state's structure, then flatten it."""
        if not self.is_tuple:
            if not isinstance(out, torch.Tensor) or out.shape != self.shapes[0] or out.dtype != self.dtype:
                raise self.mismatch(out, t)
            return out.reshape(-1)
        if (
            not isinstance(out, (tuple, list))
            or len(out) != len(self.shapes)
            or any(not isinstance(o, torch.Tensor) or o.shape != s or o.dtype != self.dtype
                   for o, s in zip(out, self.shapes))
        ):
            raise self.mismatch(out, t)
        return torch.cat([o.reshape(-1) for o in out])

    def mismatch(self, out: object, t: float) -> VectorFieldError:
        def describe(x: object) -> str:
            if isinstance(x, torch.Tensor):
                return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
            if isinstance(x, (tuple, list)):
                return "(" + ", ".join(describe(o) for o in x) + ")"
            return type(x).__name__

        want = (
            "(" + ", ".join(f"tensor of shape {tuple(s)} and dtype {self.dtype}" for s in self.shapes) + ")"
            if self.is_tuple
            else f"tensor of shape {tuple(self.shapes[0])} and dtype {self.dtype}"
        )
        return VectorFieldError(
            f"f(t, y) at t={t:.6g} returned {describe(out)}, but the state is a {want}; "
            "f must return a derivative with exactly the structure, shapes and dtype of y"
        )
