"""Norms used by the step-size controller on scaled error vectors."""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Norm = Callable[[torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root mean square of all entries (Hairer, Nørsett & Wanner, §II.4)."""
    return torch.linalg.vector_norm(x) / (x.numel() ** 0.5)


class SegmentedRMSNorm:
    """Largest RMS over contiguous segments of a flat vector.

    torchdiffeq's ``_mixed_norm``: each component of a tuple state (and, in the adjoint, the
    state, its adjoint and each parameter's adjoint) is measured on its own, so a small
    component is not drowned by a large one. Segments whose ``include`` flag is false are
    ignored, which gives the seminorm of Kidger et al. (2021) for the adjoint pass. Segments without
    entries (a component of shape ``(0,)``, say) contribute nothing.
    """

    def __init__(self, sizes: Sequence[int], include: Sequence[bool] | None = None) -> None:
        include = [True] * len(sizes) if include is None else list(include)
        self.sizes = list(sizes)
        self.ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(self.sizes))
        self.weights = torch.tensor([1.0 / s if keep and s else 0.0 for s, keep in zip(sizes, include)])
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_complex():
            x = x.abs()
        key = (x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = (self.ids.to(x.device), self.weights.to(device=x.device, dtype=x.dtype))
        ids, weights = self._cache[key]
        sums = torch.zeros(len(self.sizes), dtype=x.dtype, device=x.device).index_add_(0, ids, x.square())
        return (sums * weights).max().sqrt()


def norm_for(sizes: Sequence[int]) -> Norm:
    """Plain RMS for a single-component state, the mixed norm for tuples."""
    return rms_norm if len(sizes) == 1 else SegmentedRMSNorm(sizes)


Tolerance = Union[float, torch.Tensor]  # a number, or per-component values on the flat state


def tightest(tolerance: Tolerance) -> float:
    """The smallest value of a (possibly per-component) tolerance."""
    return float(tolerance.min()) if isinstance(tolerance, torch.Tensor) else tolerance


class ErrorScale:
    """``atol + rtol·max(|a|, |b|)``: what an error (or a change) is measured against, elementwise.

    Tolerances are kept as tensors per dtype and device (scalar arithmetic with Python floats is
    slower per call) in the real dtype, so complex states are measured by their moduli.
    """

    def __init__(self, rtol: Tolerance, atol: Tolerance) -> None:
        self.rtol, self.atol = rtol, atol
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        key = (a.dtype, a.device)
        tols = self._cache.get(key)
        if tols is None:
            real = a.real.dtype
            tols = self._cache[key] = (torch.as_tensor(self.atol).to(dtype=real, device=a.device),
                                       torch.as_tensor(self.rtol).to(dtype=real, device=a.device))
        return torch.addcmul(tols[0], torch.maximum(a.abs(), b.abs()), tols[1])
