"""Failures that used to pass as success: unconverged implicit stages, NaN f, low precision, partial rows."""

import math
import warnings

import pytest
import torch

import odekit
from odekit import InvalidInputError, NonFiniteError
from odekit.solve.errors import InnerSolveWarning

Y0 = torch.ones(3, dtype=torch.float64)
T = torch.tensor([0.0, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("method", ["prox_be", "prox_cn", "prox_bdf2", "prox_bdf4"])
def test_nan_field_is_non_finite_not_success(method):
    nan_field = lambda t, y: torch.full_like(y, math.nan)  # noqa: E731
    sol = odekit.solve(nan_field, Y0, T, method=method, step_size=0.1, throw=False)
    assert sol.status == "non_finite" and "non-finite residual" in sol.message
    assert torch.isnan(sol.ys[-1]).all()
    with pytest.raises(NonFiniteError, match="f returned NaN/inf"):
        odekit.solve(nan_field, Y0, T, method=method, step_size=0.1)


@pytest.mark.parametrize("method", ["prox_be", "prox_cn", "prox_bdf2"])
def test_unconverged_stages_set_a_status_and_warn(method):
    with pytest.warns(InnerSolveWarning, match=r"10 of 10 inner solves .*worst residual RMS [0-9.]+e\+"):
        sol = odekit.solve(lambda t, y: 1e8 * y**3, Y0, T, method=method, step_size=0.1, throw=False)
    assert sol.status == "inner_not_converged" and not sol.ok
    assert "10 of 10 inner solves" in sol.message
    assert sol.stats.extra["inner_failures"] == 10
    assert torch.isfinite(sol.ys).all()  # the last iterates are kept, the status says what they are


def test_converged_stages_stay_success_and_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnerSolveWarning)
        sol = odekit.solve(lambda t, y: -y, Y0, T, method="prox_be", step_size=0.1)
    assert sol.ok and sol.stats.extra["inner_failures"] == 0
    assert torch.allclose(sol.ys[-1], Y0 / 1.1**10, rtol=1e-6)


def test_implicit_rk_stage_failures_set_the_status():
    with pytest.warns(InnerSolveWarning, match="stage solves did not converge"):
        sol = odekit.solve(lambda t, y: 1e8 * y**3, Y0, T, method="implicit_euler", step_size=0.1,
                           options={"max_iters": 2}, throw=False)
    assert sol.status in ("inner_not_converged", "non_finite")
    assert not sol.ok


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_fixed_steps_do_not_stand_still(dtype):
    y0, t = torch.ones(2, dtype=dtype), torch.tensor([0.0, 1.0], dtype=dtype)
    sol = odekit.solve(lambda t, y: -y, y0, t, method="euler", step_size=1e-3)
    assert sol.ys.dtype == dtype and sol.ts.dtype == dtype
    # In the low dtype itself 1 - 1e-3 rounds to 1 and y stayed 1.0; carried in float32, Euler gives
    # (1 - 1e-3)^1000 = 0.3677, then rounded to the low dtype.
    assert abs(sol.ys[-1, 0].item() - (1 - 1e-3) ** 1000) < 2 * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_adaptive_needs_a_resolvable_tolerance(dtype):
    y0, t = torch.ones(2, dtype=dtype), torch.tensor([0.0, 1.0], dtype=dtype)
    with pytest.raises(InvalidInputError, match=f"below the resolution of {dtype}"):
        odekit.solve(lambda t, y: -y, y0, t)
    sol = odekit.solve(lambda t, y: -y, y0, t, rtol=1e-2, atol=1e-3)
    assert abs(sol.ys[-1, 0].item() - math.exp(-1)) < 1e-2 and sol.stats.steps_accepted < 20


def test_low_precision_field_sees_its_dtype_and_gradients_flow():
    weight = torch.tensor(-0.5, dtype=torch.bfloat16, requires_grad=True)
    y0 = torch.ones(2, dtype=torch.bfloat16, requires_grad=True)
    seen = set()

    def f(t, y):
        seen.add((t.dtype, y.dtype))
        return weight * y

    sol = odekit.solve(f, y0, torch.tensor([0.0, 1.0], dtype=torch.bfloat16), method="rk4", step_size=0.05)
    sol.ys[-1].sum().backward()
    assert seen == {(torch.bfloat16, torch.bfloat16)}
    # d/dw of 2 exp(w) at w = -0.5, and d/dy0 = exp(w), to bfloat16 accuracy (the weight's gradient
    # sums 80 stage products in bfloat16: a few percent)
    assert abs(weight.grad.item() / (2 * math.exp(-0.5)) - 1) < 0.05
    assert torch.allclose(y0.grad.float(), torch.full((2,), math.exp(-0.5)), atol=0.01)


def test_adjoint_gradients_of_the_rows_reached_match_backprop():
    theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 3, 7, dtype=torch.float64, requires_grad=True)
    grads = {}
    for gradient in ("backprop", "adjoint"):
        sol = odekit.solve(lambda s, y: -theta * y + torch.sin(s), y0, t, gradient=gradient,
                           options={"max_num_steps": 6}, adjoint_options={}, adjoint_params=(theta,), throw=False)
        assert sol.status == "max_steps_exceeded"
        reached = torch.isfinite(sol.ys).all(dim=1)
        assert 1 < int(reached.sum()) < len(t)
        grads[gradient] = torch.autograd.grad(sol.ys[reached].pow(2).sum(), (theta, y0, t))
    for backprop, adjoint in zip(grads["backprop"], grads["adjoint"]):
        assert torch.isfinite(adjoint).all()
        assert torch.allclose(backprop, adjoint, rtol=1e-5, atol=1e-7)


def test_compiled_callers_neither_fail_nor_recompile_for_new_times():
    from odekit.torchdiffeq import odeint

    compiles = []

    def counting_backend(graph, example_inputs):
        compiles.append(graph)
        return graph.forward

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x, t):
            return odeint(lambda s, y: torch.tanh(self.linear(y)), x, t)[-1]

    torch.manual_seed(0)
    model, x = Model(), torch.randn(4, 2)
    compiled = torch.compile(model, backend=counting_backend)
    for end in (1.0, 2.0, 3.0):
        t = torch.tensor([0.0, end])
        assert torch.allclose(compiled(x, t), model(x, t), atol=1e-6)
        if end == 1.0:
            after_first = len(compiles)
    assert len(compiles) == after_first  # t's values are never baked into a graph


def test_no_experiment_silences_solver_warnings():
    """Experiments used to wrap whole training cells in ``simplefilter("ignore", UserWarning)``, which
    swallowed every InnerSolveWarning; a warning may be recorded locally and reported, never dropped."""
    import re
    from pathlib import Path

    import odekit.experiments

    for path in Path(odekit.experiments.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"simplefilter\(\s*[\"']ignore", text), path.name
        assert not re.search(r"filterwarnings\(\s*[\"']ignore[\"'],\s*(category=)?(UserWarning|InnerSolveWarning)",
                             text), path.name
