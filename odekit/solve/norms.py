"""Norms used by the step-size controller on scaled error vectors."""

from __future__ import annotations

from typing import Callable, Sequence

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
    ignored, which gives the seminorm of Kidger et al. (2021) for the adjoint pass.
    """

    def __init__(self, sizes: Sequence[int], include: Sequence[bool] | None = None) -> None:
        include = [True] * len(sizes) if include is None else list(include)
        self.sizes = list(sizes)
        self.ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(self.sizes))
        self.weights = torch.tensor([1.0 / s if keep else 0.0 for s, keep in zip(sizes, include)])
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
