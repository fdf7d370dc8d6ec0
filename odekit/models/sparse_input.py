"""Input dropout for mostly-zero feature matrices (bag-of-words node features).

Dropout leaves zeros alone, so for a feature matrix with few non-zeros (Cora 1.3%, CiteSeer
0.9%, Coauthor CS 0.9%) only its stored values need a random mask. A dense ``F.dropout`` draws one
random number per entry instead: 3.7 s per call on Coauthor CS's 18333 × 6805 matrix on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SPARSE_ENOUGH = 0.1  # at most this fraction of non-zeros takes the sparse path


class SparseInputDropout:
    """Dropout of ``x`` computed on its non-zeros.

    :meth:`__call__` returns a sparse COO tensor (coalesced) for mostly-zero inputs and ``None``
    for dense ones, where the caller applies ordinary dropout. With ``cached`` the sparse form of
    the first input is kept and reused for every later call (PyG's ``cached=True``: for training
    on one fixed feature matrix); otherwise each call converts its own input.
    """

    def __init__(self, cached: bool = False) -> None:
        self.cached = cached
        self._kept: tuple[torch.Size, torch.Tensor | None] | None = None

    def _sparse(self, x: torch.Tensor) -> torch.Tensor | None:
        if x.is_sparse:
            return x.coalesce()
        if x.requires_grad:  # a learned input: keep autograd's dense path
            return None
        if self.cached and self._kept is not None:
            if self._kept[0] != x.shape:
                raise ValueError(f"cached=True holds the sparse form of a {tuple(self._kept[0])} input, but this one "
                                 f"is {tuple(x.shape)}: use cached=False for changing inputs")
            return self._kept[1]
        sparse = x.to_sparse().coalesce() if bool((x != 0).sum() <= SPARSE_ENOUGH * x.numel()) else None
        if self.cached:
            self._kept = (x.shape, sparse)
        return sparse

    def __call__(self, x: torch.Tensor, p: float, training: bool) -> torch.Tensor | None:
        sparse = self._sparse(x)
        if sparse is None:
            return None
        values = F.dropout(sparse.values(), p, training)
        return torch.sparse_coo_tensor(sparse.indices(), values, sparse.shape, is_coalesced=True,
                                       check_invariants=False)
