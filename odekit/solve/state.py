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
        if all(p.numel() == 0 for p in parts):
            # Nothing to integrate, and no step size to control (an error norm of nothing is NaN).
            shapes = ", ".join(str(tuple(p.shape)) for p in parts)
            raise InvalidInputError(
                f"y0 has no entries (shape{'s' if len(parts) > 1 else ''} {shapes}); skip the solve for an empty "
                "batch (its solution has no entries either)"
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
        """Check what ``f`` returned against the state's structure, then flatten it.

        Tensor subclasses (``nn.Parameter``, a user's own) count as tensors; the flat vector is a
        plain tensor, so the solver's arithmetic does not go through their ``__torch_function__``.
        """
        if not self.is_tuple:
            if not self._fits(out, self.shapes[0]):
                raise self.mismatch(out, t)
            return _plain(out).reshape(-1)
        if (
            not isinstance(out, (tuple, list))
            or len(out) != len(self.shapes)
            or not all(self._fits(o, s) for o, s in zip(out, self.shapes))
        ):
            raise self.mismatch(out, t)
        return torch.cat([_plain(o).reshape(-1) for o in out])

    def _fits(self, out: object, shape: torch.Size) -> bool:
        return (isinstance(out, torch.Tensor) and out.shape == shape and out.dtype == self.dtype
                and out.device == self.device)

    def mismatch(self, out: object, t: float) -> VectorFieldError:
        parts = out if isinstance(out, (tuple, list)) else (out,)
        # Devices are named only when they differ: the usual mistakes are shapes and dtypes.
        show_device = any(isinstance(o, torch.Tensor) and o.device != self.device for o in parts)

        def tensor(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> str:
            return f"tensor of shape {tuple(shape)} and dtype {dtype}" + (f" on {device}" if show_device else "")

        def describe(x: object) -> str:
            if isinstance(x, torch.Tensor):
                return tensor(x.shape, x.dtype, x.device)
            if isinstance(x, (tuple, list)):
                return "(" + ", ".join(describe(o) for o in x) + ")"
            return type(x).__name__

        want = (
            "(" + ", ".join(tensor(s, self.dtype, self.device) for s in self.shapes) + ")"
            if self.is_tuple
            else tensor(self.shapes[0], self.dtype, self.device)
        )
        fix = " (create tensors in f with device=y.device, or move them with .to(y.device))" if show_device else ""
        return VectorFieldError(
            f"f(t, y) at t={t:.6g} returned {describe(out)}, but the state is a {want}; "
            f"f must return a derivative with exactly the structure, shapes, dtype and device of y{fix}"
        )


def _plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor`` (a view of a subclass instance, still on autograd's graph)."""
    return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)
