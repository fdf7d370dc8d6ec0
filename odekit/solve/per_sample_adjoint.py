"""The continuous adjoint of a per-sample solve: every sample solves its own adjoint backwards.

Forward, the samples are stepped as in :mod:`~odekit.solve.per_sample`, without a graph. The
backward pass integrates, for each sample ``b`` and from its last output time to its first,

    dy_b/dt = f(t, y_b),    da_b/dt = −a_bᵀ ∂f/∂y_b                       (thesis eqs. 2.31, 2.38)

with per-sample steps, adding ``∂L/∂y_b(t_i)`` to ``a_b`` and resetting ``y_b`` to the stored
forward state at each output time. The parameter gradient ``∫ a_bᵀ ∂f/∂θ dt`` (eqs. 3.2–3.3) is
summed over the samples, so it cannot be a per-sample state: it is a quadrature over each
sample's accepted steps with the tableau's weights, ``Σ_steps h_b Σ_i b_i a_{b,i}ᵀ ∂f/∂θ(stage i)``,
taken after the step is accepted by one backward pass through the stages' graphs with the
cotangents ``h_b b_i a_{b,i}`` (zero for rows that rejected). It is therefore not in the error
estimate: the seminorm of Kidger et al. (2021). Memory does not grow with the number of steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import tensor_loop
from .controller import PIController
from .errors import InvalidInputError
from .methods import Method
from .runge_kutta import RungeKutta
from .solution import SolveStats
from .state import StateLayout
from .tensor_loop import CompileWarning


@dataclass
class Settings:
    """One direction of the solve: the method, its controller and caps."""

    method: Method
    options: dict
    controller: PIController
    max_steps: int
    max_nfe: float

    def solver(self) -> RungeKutta:
        return self.method.make_solver(self.options, self.controller.rtol, self.controller.atol)


class _Augmented:
    """``[y, a] ↦ [f(t, y), −aᵀ ∂f/∂y]`` on every row; the output keeps ``f``'s graph to the
    parameters for the quadrature."""

    def __init__(self, f: Callable, layout: StateLayout) -> None:
        self.f, self.layout, self.n = f, layout, layout.numel

    def field(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``f`` on flat rows (call with autograd recording)."""
        layout, batch = self.layout, y.shape[0]
        if layout.is_tuple:
            parts = tuple(p.reshape(batch, *shape) for p, shape in zip(y.split(layout.sizes, dim=1), layout.shapes))
            return torch.cat([o.reshape(batch, -1) for o in self.f(t, parts)], dim=1)
        return self.f(t, y.view(batch, *layout.shapes[0])).reshape(batch, -1)

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n = self.n
        with torch.enable_grad():
            y = z[:, :n].detach().requires_grad_()
            fy = self.field(t, y)
            (vjp,) = torch.autograd.grad(fy, y, z[:, n:], retain_graph=True, allow_unused=True)
            return torch.cat([fy, -(torch.zeros_like(fy) if vjp is None else vjp.detach())], dim=1)

    def quadrature(self, params: Sequence[torch.Tensor]):
        """``−Σ_b Σ_i w_ib a_{b,i}ᵀ ∂f/∂θ`` over one step's stages (see the module docstring).

        A stage whose output has no graph (the first, carried over from the previous step, whose
        graph the loop does not keep) is evaluated again.
        """
        n = self.n

        def integrate(times: list[torch.Tensor], inputs: list[torch.Tensor], stages: list[torch.Tensor],
                      weights: torch.Tensor) -> torch.Tensor:
            if not params:
                return weights.new_zeros(0)
            outputs, cotangents = [], []
            with torch.enable_grad():
                for t, z, k, w in zip(times, inputs, stages, weights):
                    fy = k[:, :n] if k.grad_fn is not None else self.field(t, z[:, :n].detach())
                    outputs.append(fy)
                    cotangents.append(-w[:, None].to(fy.dtype) * z[:, n:].detach())  # dg/dt = −aᵀ ∂f/∂θ
                grads = torch.autograd.grad(outputs, params, cotangents, allow_unused=True)
            return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])

        return integrate


class _PerSampleAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: dict, flat0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        forward, layout, times = spec["forward"], spec["layout"], spec["times"]
        s = tensor_loop.stepping(spec["f"], layout, False, spec["t_dtype"], times, forward.solver(),
                                 forward.controller, forward.max_steps)
        with torch.no_grad():
            carry, nfe = tensor_loop.run(s, flat0.detach(), compile=spec["compile"], max_nfe=forward.max_nfe)
        spec["carry"], spec["nfe"] = carry, nfe
        ctx.spec = spec
        ctx.save_for_backward(carry.rows, *params)
        return carry.rows.clone()

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor):
        spec = ctx.spec
        rows, *params = ctx.saved_tensors
        layout, times, backward = spec["layout"], spec["times"], spec["backward"]
        stats: SolveStats = spec["stats"]
        n = layout.numel
        augmented = StateLayout((torch.Size([2 * n]),), False, rows.dtype, rows.device)
        sizes = layout.sizes
        segments = tuple((size, True) for size in sizes) * 2
        size = sum(p.numel() for p in params)
        if spec["compile"]:
            warnings.warn("compile=True: the per-sample adjoint's backward solve runs eagerly (its parameter "
                          "quadrature differentiates the stages' graphs after each step, which dynamo cannot take "
                          "as inputs)", CompileWarning, stacklevel=2)
        a = grad_rows[-1]
        total = rows.new_zeros(size)
        steps = torch.zeros(rows.shape[1], dtype=torch.long, device=rows.device)
        for i in range(times.shape[1] - 1, 0, -1):
            interval = torch.stack([times[:, i], times[:, i - 1]], dim=1)
            field = _Augmented(spec["f"], layout)
            s = tensor_loop.stepping(field, augmented, False, spec["t_dtype"], interval,
                                     backward.solver(), backward.controller, backward.max_steps, segments,
                                     field.quadrature(params), size)
            carry, nfe = tensor_loop.run(s, torch.cat([rows[i], a], dim=1), compile=False, max_nfe=backward.max_nfe)
            stats.nfe_backward += nfe
            steps = steps + carry.accepted + carry.rejected
            if bool(carry.failure.any()):
                first = int(carry.failure.nonzero()[0])
                error, why = tensor_loop.FAILURES[int(carry.failure[first])]
                raise error(f"the backward (adjoint) solve of sample {first} failed: {why} at "
                            f"t={float(carry.failed_at[first]):.6g}; loosen adjoint_rtol/adjoint_atol or use "
                            "gradient='backprop'")
            a = carry.rows[-1][:, n:] + grad_rows[i - 1]
            total = total + carry.total
        stats.steps_backward += int(steps.sum())
        stats.per_sample["steps_backward"] = steps
        grads, offset = [], 0
        for p in params:
            grads.append(total[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
        return None, a, *grads


def solve(f: Callable, flat0: torch.Tensor, times: torch.Tensor, layout: StateLayout, t_dtype: torch.dtype,
          forward: Settings, backward: Settings, params: Sequence[torch.Tensor], stats: SolveStats,
          compile: bool) -> tuple[torch.Tensor, tensor_loop.Carry, int]:
    """The per-sample solve of flat rows ``flat0`` (``(B, n)``) with adjoint gradients to ``flat0``
    and ``params``; returns the output rows ``(T, B, n)``, the forward carry and its evaluations."""
    for side in (forward, backward):
        solver = side.solver()
        if not isinstance(solver, RungeKutta) or not solver.adaptive:
            raise InvalidInputError(f"per_sample=True steps adaptive explicit Runge–Kutta methods; "
                                    f"adjoint_method {side.method.name!r} is not one")
    spec = {"f": f, "layout": layout, "times": times, "t_dtype": t_dtype, "forward": forward, "backward": backward,
            "stats": stats, "compile": compile}
    rows = _PerSampleAdjoint.apply(spec, flat0, *params)
    return rows, spec["carry"], spec["nfe"]

