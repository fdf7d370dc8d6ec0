"""Factorisations of the Newton matrix ``I − c J`` that implicit solvers reuse across iterations.

Dense LU (``torch.linalg``) on any device; on the CPU, a Jacobian that is mostly zeros (a
discretised PDE: the heat equation's is tridiagonal) is factored sparsely by SuperLU through
``scipy.sparse.linalg.splu``, which costs O(n) instead of O(n³) for banded matrices. Both solve
differentiably: backprop through a sparse solve runs the transposed solve with the same factors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

# A Jacobian is factored sparsely when it has at least this many rows and at most this fraction
# of nonzeros (below that size dense LU is fast enough and SuperLU's setup dominates).
SPARSE_MIN_SIZE = 256
SPARSE_MAX_DENSITY = 0.05


def sparse_pattern(jacobian: torch.Tensor) -> scipy.sparse.csc_matrix | None:
    """``J`` as a SciPy CSC matrix if it is large and sparse enough and lives on the CPU, else ``None``."""
    n = jacobian.shape[0]
    if n < SPARSE_MIN_SIZE or jacobian.device.type != "cpu" or jacobian.dtype not in (torch.float32, torch.float64):
        return None
    nonzero = int(torch.count_nonzero(jacobian))
    if nonzero > SPARSE_MAX_DENSITY * n * n:
        return None
    return scipy.sparse.csc_matrix(jacobian.numpy())


class SingularMatrixError(ArithmeticError):
    """``I − c J`` is exactly singular (``1/c`` is an eigenvalue of ``J``): another ``c`` (step) avoids it."""


class DenseLU:
    """LU of ``I − c J`` for a dense ``J``."""

    def __init__(self, jacobian: torch.Tensor, c: float) -> None:
        eye = torch.eye(jacobian.shape[0], dtype=jacobian.dtype, device=jacobian.device)
        lu, pivots, info = torch.linalg.lu_factor_ex(eye - c * jacobian)
        if int(info) > 0:
            raise SingularMatrixError(f"I - c J is singular (zero pivot {int(info)}) at c={c:.6g}")
        self.factors = (lu, pivots)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return torch.linalg.lu_solve(*self.factors, rhs[:, None])[:, 0]


class SparseLU:
    """SuperLU of ``I − c J`` for a sparse CPU ``J`` (CSC)."""

    def __init__(self, jacobian: scipy.sparse.csc_matrix, c: float) -> None:
        n = jacobian.shape[0]
        matrix = (scipy.sparse.identity(n, dtype=jacobian.dtype, format="csc") - c * jacobian).tocsc()
        try:
            self.factors = scipy.sparse.linalg.splu(matrix)
        except RuntimeError as err:  # SuperLU: "Factor is exactly singular"
            raise SingularMatrixError(f"I - c J is singular at c={c:.6g}: {err}") from None

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return _SparseSolve.apply(rhs, self.factors)


class _SparseSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rhs: torch.Tensor, factors) -> torch.Tensor:
        ctx.factors = factors
        return torch.from_numpy(np.asarray(factors.solve(rhs.detach().numpy()))).to(rhs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return torch.from_numpy(np.asarray(ctx.factors.solve(grad.detach().numpy(), trans="T"))).to(grad), None


def factorize(jacobian: torch.Tensor, pattern: scipy.sparse.csc_matrix | None, c: float) -> DenseLU | SparseLU:
    """The factorisation of ``I − c J``: sparse when ``pattern`` (from :func:`sparse_pattern`) is given.

    Raises :class:`SingularMatrixError` when it is exactly singular."""
    return DenseLU(jacobian, c) if pattern is None else SparseLU(pattern, c)
