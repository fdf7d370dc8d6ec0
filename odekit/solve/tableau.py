"""Butcher tableaus as data, and the dense-output weights derived from them.

An explicit Runge–Kutta method (thesis §2.2, eq. 2.19 generalised) advances
``y1 = y0 + h Σ_j b_j k_j`` with stages ``k_i = f(t0 + c_i h, y0 + h Σ_{j<i} a_ij k_j)``.
A tableau is only numbers; :mod:`odekit.solve.runge_kutta` runs every tableau with one loop.

Dense output is also expressed through the stages: ``y(t0 + θh) ≈ y0 + h Σ_j β_j(θ) k_j``
with ``β(θ) = D @ [θ, θ², …]``. :func:`dense_matrix` derives ``D`` from the tableau alone:
linear interpolation for fixed-step methods, a cubic Hermite interpolant for low-order pairs,
and a quartic through a fourth-order midpoint value for pairs of order ≥ 4 (its midpoint
weights are solved from the order conditions, so no tableau needs hand-written dense
coefficients).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

Number = float | Fraction | int


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method.

    ``a[i]`` holds the ``i`` coefficients of stage ``i`` (``a[0]`` is empty). ``b_error`` holds
    ``b - b̂`` of an embedded pair, whose combination with the stages estimates the local error;
    it is ``None`` for fixed-step methods. ``order`` is the order of the propagated solution.
    """

    name: str
    c: tuple[Number, ...]
    a: tuple[tuple[Number, ...], ...]
    b: tuple[Number, ...]
    order: int
    b_error: tuple[Number, ...] | None = None

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"tableau {self.name}: a must be strictly lower triangular with {s} rows")
        if self.b_error is not None and len(self.b_error) != s:
            raise ValueError(f"tableau {self.name}: b_error needs {s} entries")
        for i, row in enumerate(self.a):
            if abs(float(sum(row)) - float(self.c[i])) > 1e-12:
                raise ValueError(f"tableau {self.name}: row {i} of a does not sum to c[{i}]")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def fsal(self) -> bool:
        """First-same-as-last: the last stage is ``f(t1, y1)``, reused as the next step's first."""
        return float(self.c[-1]) == 1.0 and tuple(self.a[-1]) == tuple(self.b[:-1]) and float(self.b[-1]) == 0.0

    def with_end_stage(self) -> "ButcherTableau":
        """The same method with ``f(t1, y1)`` appended as a final stage (a no-op if FSAL).

        Adaptive solvers always need ``f(t1, y1)``: it is the next step's first stage and the end
        slope of the interpolant, so appending it costs no extra evaluation on accepted steps.
        """
        if self.fsal:
            return self
        zero = Fraction(0)
        return ButcherTableau(
            name=self.name,
            c=(*self.c, Fraction(1)),
            a=(*self.a, tuple(self.b)),
            b=(*self.b, zero),
            order=self.order,
            b_error=None if self.b_error is None else (*self.b_error, zero),
        )

    def matrix(self) -> np.ndarray:
        """The full ``s × s`` strictly lower-triangular matrix ``A``."""
        s = self.stages
        out = np.zeros((s, s))
        for i, row in enumerate(self.a):
            out[i, : len(row)] = [float(x) for x in row]
        return out


def _order_conditions(tableau: ButcherTableau, theta: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``Φ(τ)`` and right-hand sides ``θ^|τ| / γ(τ)`` for every rooted tree ``τ`` of one order.

    ``y0 + h Σ w_j k_j`` matches ``y(t0 + θh)`` up to ``O(h^{p+1})`` iff ``w·Φ(τ) = θ^|τ|/γ(τ)``
    for all trees with ``|τ| ≤ p`` (Butcher's theory; Hairer, Nørsett & Wanner, §II.2).
    """
    A = tableau.matrix()
    c = np.array([float(x) for x in tableau.c])
    Ac, Ac2 = A @ c, A @ c**2
    trees = {
        1: [(np.ones_like(c), 1)],
        2: [(c, 2)],
        3: [(c**2, 3), (Ac, 6)],
        4: [(c**3, 4), (c * Ac, 8), (Ac2, 12), (A @ Ac, 24)],
        5: [(c**4, 5), (c**2 * Ac, 10), (c * Ac2, 15), (c * (A @ Ac), 30), (Ac**2, 20),
            (A @ c**3, 20), (A @ (c * Ac), 40), (A @ Ac2, 60), (A @ (A @ Ac), 120)],
    }[order]
    return np.array([phi for phi, _ in trees]), np.array([theta**order / gamma for _, gamma in trees])


def _quadrature_weights(tableau: ButcherTableau, theta: float, order: int) -> np.ndarray:
    """Weights ``w`` with ``y0 + h Σ w_j k_j = y(t0 + θh) + O(h^{order+1})``.

    Solves the order conditions up to ``order`` exactly; where that leaves freedom, the weights
    also minimise the next order's residuals (smaller error constant), then their norm.
    Raises if the stages cannot reach ``order`` at ``θ``.
    """
    blocks = [_order_conditions(tableau, theta, q) for q in range(1, order + 1)]
    M = np.concatenate([rows for rows, _ in blocks])
    r = np.concatenate([rhs for _, rhs in blocks])
    w, *_ = np.linalg.lstsq(M, r, rcond=None)
    if np.abs(M @ w - r).max() > 1e-10:
        raise ValueError(f"tableau {tableau.name}: stages cannot give an order-{order} value at θ={theta}")
    if order < 5:
        _, sv, vt = np.linalg.svd(M)
        null = vt[int((sv > 1e-10 * sv[0]).sum()):].T  # directions that keep the conditions satisfied
        if null.size:
            rows, rhs = _order_conditions(tableau, theta, order + 1)
            z, *_ = np.linalg.lstsq(rows @ null, rhs - rows @ w, rcond=None)
            w = w + null @ z
    return w


def dense_matrix(tableau: ButcherTableau) -> np.ndarray:
    """Matrix ``D`` (stages × degree) with ``y(t0+θh) ≈ y0 + h Σ_j (D @ [θ, …, θ^deg])_j k_j``.

    For adaptive tableaus the last stage must be ``f(t1, y1)`` (see :meth:`ButcherTableau.with_end_stage`).
    """
    s = tableau.stages
    b = np.array([float(x) for x in tableau.b])
    if not tableau.adaptive:
        return b[:, None]  # linear interpolation between y0 and y1, as torchdiffeq's fixed grids
    e_first, e_last = np.eye(s)[0], np.eye(s)[-1]
    # Write p(θ) = y0 + θ h f0 + Σ_{p≥2} c_p θ^p and match the end value, the end slope and, for
    # the quartic, the midpoint value; each right-hand side is a stage combination.
    value_end, slope_end = b - e_first, e_last - e_first
    if tableau.order >= 4:
        mid = _quadrature_weights(tableau, 0.5, 4)
        conditions = np.array([[1, 1, 1], [2, 3, 4], [4, 2, 1]], dtype=float)
        rhs = np.stack([value_end, slope_end, 16 * (mid - e_first / 2)])
    else:
        conditions = np.array([[1, 1], [2, 3]], dtype=float)
        rhs = np.stack([value_end, slope_end])
    higher = np.linalg.solve(conditions, rhs)  # (degree-1) × s
    return np.concatenate([e_first[None], higher]).T
