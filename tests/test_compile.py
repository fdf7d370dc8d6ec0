"""compile=True: the step loop in tensors, through torch.compile, equals the eager solve."""

from __future__ import annotations

import warnings

import pytest
import torch

import odekit
from odekit.models import ODEBlock
from odekit.solve.tensor_loop import CompileWarning

pytestmark = pytest.mark.slow  # each new field or shape compiles for a few seconds


class Field(torch.nn.Module):
    def __init__(self, dim: int = 2, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.Tanh(), torch.nn.Linear(width, dim))
        self.double()

    def forward(self, t, y):  # t is 0-d, or (batch,) with per_sample=True
        return self.net(y) * torch.cos(t).reshape(-1, 1)


@pytest.fixture(scope="module")
def y0() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(6, 2, dtype=torch.float64)


T = torch.tensor([0.0, 0.4, 1.3, 2.0], dtype=torch.float64)


def _no_warning_solve(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        return odekit.solve(*args, **kwargs)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_a_compiled_solve_takes_the_eager_steps_and_values(y0, method):
    field = Field()
    with torch.no_grad():
        eager = odekit.solve(field, y0, T, method=method, rtol=1e-8, atol=1e-10)
        compiled = _no_warning_solve(field, y0, T, method=method, rtol=1e-8, atol=1e-10, compile=True)
    torch.testing.assert_close(compiled.ys, eager.ys, rtol=0, atol=1e-10)
    assert compiled.stats.steps_accepted == eager.stats.steps_accepted
    assert compiled.stats.steps_rejected == eager.stats.steps_rejected
    assert compiled.stats.nfe == eager.stats.nfe


def test_repeated_compiled_solves_do_not_recompile(y0):
    field = Field()
    with torch.no_grad():
        _no_warning_solve(field, y0, T, compile=True)  # compiles
        with torch._dynamo.config.patch(error_on_recompile=True):
            for scale in (0.5, 2.0):
                again = _no_warning_solve(field, y0 * scale, T * scale, compile=True)
                eager = odekit.solve(field, y0 * scale, T * scale)
                torch.testing.assert_close(again.ys, eager.ys, rtol=0, atol=1e-10)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_gradients_through_the_compiled_solve_equal_the_eager_ones(y0, gradient):
    field = Field()
    params = tuple(field.parameters())

    def gradients(compile: bool):
        y = y0.clone().requires_grad_()
        sol = _no_warning_solve(field, y, T, rtol=1e-9, atol=1e-11, gradient=gradient, compile=compile)
        loss = (sol.ys[1:] ** 2).sum()
        return torch.autograd.grad(loss, (y, *params)), sol.stats

    eager, eager_stats = gradients(False)
    compiled, compiled_stats = gradients(True)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert compiled_stats.nfe_backward == eager_stats.nfe_backward


def test_per_sample_compiled_equals_per_sample_eager(y0):
    field = Field()
    times = torch.stack([T * (1 + 0.3 * b) for b in range(y0.shape[0])])
    with torch.no_grad():
        eager = odekit.solve(field, y0, times, rtol=1e-8, atol=1e-10, per_sample=True)
        compiled = _no_warning_solve(field, y0, times, rtol=1e-8, atol=1e-10, per_sample=True, compile=True)
    torch.testing.assert_close(compiled.ys, eager.ys, rtol=0, atol=1e-10)
    for key in ("steps_accepted", "steps_rejected", "nfe"):
        assert torch.equal(compiled.stats.per_sample[key], eager.stats.per_sample[key])


def test_what_cannot_be_compiled_runs_eagerly_with_a_warning(y0):
    def untraceable(t, y):  # Python control flow on a value breaks the graph: no fullgraph compile
        return -y if bool(y.sum() < 1e9) else y

    with pytest.warns(CompileWarning, match="could not be compiled"):
        sol = odekit.solve(untraceable, y0, T, compile=True)
    torch.testing.assert_close(sol.ys[-1], y0 * torch.exp(-T[-1]), rtol=1e-6, atol=1e-8)
    with pytest.warns(CompileWarning, match="uses method 'rk4'"):
        fixed = odekit.solve(lambda t, y: -y, y0, T, method="rk4", step_size=0.01, compile=True)
    torch.testing.assert_close(fixed.ys[-1], y0 * torch.exp(-T[-1]), rtol=1e-8, atol=1e-10)
    with pytest.warns(CompileWarning, match="keeps dense output"):
        odekit.solve(lambda t, y: -y, y0, T, dense=True, compile=True)


def test_an_ode_block_compiles_its_solve(y0):
    field = Field()
    eager = ODEBlock(field, 1.5, rtol=1e-8, atol=1e-10)
    compiled = ODEBlock(field, 1.5, rtol=1e-8, atol=1e-10, compile=True)
    y = y0.clone().requires_grad_()
    out_eager, out_compiled = eager(y), compiled(y)
    torch.testing.assert_close(out_compiled, out_eager, rtol=0, atol=1e-10)
    (g_eager,) = torch.autograd.grad(out_eager.sum(), y)
    (g_compiled,) = torch.autograd.grad(out_compiled.sum(), y)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-9, atol=1e-12)
    assert compiled.stats.nfe == eager.stats.nfe
