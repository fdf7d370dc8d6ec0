"""One explicit Runge–Kutta step for any :class:`ButcherTableau`, and its dense output."""

from __future__ import annotations

from typing import Callable

import torch

from .field import side_of
from .tableau import ButcherTableau, dense_matrix

Field = Callable[[float, torch.Tensor], torch.Tensor]


class _Coefficients:
    """The tableau as tensors of one dtype and device (built once, reused every step)."""

    def __init__(self, tableau: ButcherTableau, dense: torch.Tensor, dtype: torch.dtype, device: torch.device):
        s = tableau.stages
        A = torch.as_tensor(tableau.matrix(), dtype=dtype, device=device)
        self.a_rows = list(A.unbind(0))
        self.b = torch.tensor([float(x) for x in tableau.b], dtype=dtype, device=device)
        self.e = (
            torch.tensor([float(x) for x in tableau.b_error], dtype=dtype, device=device)
            if tableau.adaptive
            else None
        )
        self.dense_t = dense.to(dtype=dtype, device=device).T.contiguous()  # degree × stages
        self.powers = torch.arange(1, dense.shape[1] + 1, device=device).to(dtype)
        self.stages = s


class RungeKutta:
    """Explicit Runge–Kutta solver over flat state vectors.

    Stages are kept as rows of ``K`` (stages × n) so that every combination
    ``y0 + h Σ_j a_ij k_j`` is one fused ``addmv``. Under autograd the stages are combined
    out of place instead (in-place writes into ``K`` would invalidate saved tensors).
    Adaptive tableaus get ``f(t1, y1)`` as their last stage (first same as last), which is
    both the next step's first stage and the end slope of the dense output.
    """

    # The solver state between steps is f at the step's start, rebuilt exactly from (t, y): a saved
    # state is a complete checkpoint (gradient="checkpoint").
    restartable = True

    def __init__(self, tableau: ButcherTableau) -> None:
        self.name = tableau.name
        self.tableau = tableau.with_end_stage() if tableau.adaptive else tableau
        self.order = tableau.order
        self.error_order = tableau.order
        self.adaptive = tableau.adaptive
        self.fsal = tableau.adaptive
        self._c = [float(x) for x in self.tableau.c]
        # Stages at the step's end are evaluated from inside the step (see VectorField's ``side``).
        self._side = [side_of(c) for c in self._c]
        self._a = [[(j, float(x)) for j, x in enumerate(row) if x != 0] for row in self.tableau.a]
        self._dense = torch.as_tensor(dense_matrix(self.tableau))
        self._cache: dict[tuple[torch.dtype, torch.device], _Coefficients] = {}

    def coefficients(self, y: torch.Tensor) -> _Coefficients:
        key = (y.dtype, y.device)
        coeffs = self._cache.get(key)
        if coeffs is None:
            coeffs = self._cache[key] = _Coefficients(self.tableau, self._dense, y.dtype, y.device)
        return coeffs

    def init(self, t0: float, y0: torch.Tensor, f0: torch.Tensor | None) -> torch.Tensor | None:
        """The solver state at the start: ``f(t0, y0)`` for first-same-as-last tableaus."""
        return f0 if self.fsal else None

    def accepted(self, state: torch.Tensor | None, K: torch.Tensor) -> torch.Tensor | None:
        """The state after an accepted step: its last stage is the next step's first."""
        return K[-1] if self.fsal else None

    def record(self, stats) -> None:
        """Explicit RK keeps no counters beyond the loop's."""

    def start_slope(self, K: torch.Tensor) -> torch.Tensor:
        """``f(t0, y0)`` of the step that produced ``K`` (its first stage)."""
        return K[0]

    def step(
        self, field: Field, t0: float, y0: torch.Tensor, h: float, k_first: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance ``y0`` by ``h``; returns ``y1`` and the stage matrix ``K``.

        ``k_first`` is the solver state (``f(t0, y0)`` when already known).
        """
        co = self.coefficients(y0)
        c = self._c
        k0 = field(t0, y0, self._side[0]) if k_first is None else k_first
        side = self._side
        if torch.is_grad_enabled():
            ks = [k0]
            for i in range(1, co.stages):
                yi = y0
                for j, a in self._a[i]:
                    yi = torch.add(yi, ks[j], alpha=a * h)
                ks.append(field(t0 + c[i] * h, yi, side[i]))
            K = torch.stack(ks)
        else:
            K = y0.new_zeros(co.stages, y0.numel())  # zeros: unwritten rows meet zero coefficients
            K[0] = k0
            KT = K.T
            for i in range(1, co.stages):
                K[i] = field(t0 + c[i] * h, torch.addmv(y0, KT, co.a_rows[i], alpha=h), side[i])
        # The increment first, then one addition: addmv would round into y0 once per stage, which
        # in float32 drifts several ulps per step on slowly varying states (3.5× measured).
        y1 = torch.add(y0, torch.mv(K.T, co.b), alpha=h)
        return y1, K

    def error(self, K: torch.Tensor) -> torch.Tensor:
        """``Σ_j (b_j − b̂_j) k_j``: the local error estimate divided by ``h`` (call without autograd)."""
        return torch.mv(K.T, self.coefficients(K).e)

    def interpolate(self, y0: torch.Tensor, K: torch.Tensor, h: float, theta: torch.Tensor) -> torch.Tensor:
        """States at ``t0 + θh`` for each ``θ`` in ``theta`` (shape m), as an ``m × n`` tensor."""
        co = self.coefficients(y0)
        weights = (theta.to(y0.dtype)[:, None] ** co.powers) @ co.dense_t
        return torch.addmm(y0, weights, K, alpha=h)
