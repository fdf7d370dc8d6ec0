"""Every input and runtime failure raises a clear, specific error."""

import math

import pytest
import torch

import odekit
from odekit import (
    InvalidInputError,
    MaxStepsExceededError,
    NonFiniteError,
    StepSizeUnderflowError,
    VectorFieldError,
)

Y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
T = torch.tensor([0.0, 1.0], dtype=torch.float64)


def rotate(t, y):
    return torch.stack([y[1], -y[0]])


@pytest.mark.parametrize(
    "y0,t,match",
    [
        (torch.tensor([1.0, math.nan], dtype=torch.float64), T, "NaN or inf"),
        (Y0, torch.tensor([0.0, math.inf], dtype=torch.float64), "non-finite"),
        (Y0, torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64), "strictly increasing or strictly decreasing"),
        (Y0, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), "strictly"),
        (Y0, torch.tensor([0.0, 1.0], dtype=torch.float32), "dtype"),
        (Y0, torch.tensor([[0.0, 1.0]], dtype=torch.float64), "1-D"),
        (Y0, [0.0, 1.0], "torch tensor"),
        (torch.tensor([1, 0]), T, "floating point"),
        ((Y0, Y0.float()), T, "share dtype"),
        ((), T, "empty"),
    ],
)
def test_bad_inputs(y0, t, match):
    with pytest.raises(InvalidInputError, match=match):
        odekit.solve(rotate, y0, t)


def test_device_mismatch_on_cpu_meta():
    """A y0 on another device than t (the meta device stands in for a GPU here)."""
    with pytest.raises(InvalidInputError, match="move both to one device"):
        odekit.solve(rotate, torch.zeros(2, dtype=torch.float64, device="meta"), T)


@pytest.mark.parametrize("kwargs,match", [
    ({"rtol": 0.0}, "rtol must be a positive"),
    ({"atol": -1e-9}, "atol must be a positive"),
    ({"rtol": math.nan}, "rtol"),
    ({"method": "rk45"}, "valid methods: .*dopri5"),
    ({"options": {"max_iters": 3}}, "valid options: .*first_step"),
    ({"method": "rk4", "options": {"safety": 0.5}}, "valid options: step_size"),
    ({"gradient": "forward"}, "gradient must be one of"),
    ({"options": {"max_num_steps": 0}}, "max_num_steps must be an integer with max_num_steps ≥ 1"),
    ({"method": "euler", "step_size": -0.1}, "step_size must be a finite number with step_size > 0"),
    ({"gradient": "adjoint", "adjoint_options": {"norm": "l2"}}, "seminorm"),
    ({"gradient": "adjoint", "adjoint_method": "nope", "adjoint_params": ()}, "valid methods"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        odekit.solve(rotate, Y0, T, **kwargs)


def test_adjoint_needs_parameters_of_a_plain_function():
    with pytest.raises(InvalidInputError, match="adjoint_params"):
        odekit.solve(rotate, Y0, T, gradient="adjoint")


@pytest.mark.parametrize("f,match", [
    (lambda t, y: y[:1], r"shape \(1,\).*shape \(2,\)"),
    (lambda t, y: y.float(), "dtype torch.float32"),
    (lambda t, y: (y, y), r"returned \(tensor"),
    (lambda t, y: 3.0, "returned float"),
])
def test_vector_field_returning_the_wrong_thing(f, match):
    with pytest.raises(VectorFieldError, match=match):
        odekit.solve(f, Y0, T)


def test_tuple_field_returning_wrong_structure():
    with pytest.raises(VectorFieldError, match="exactly the structure"):
        odekit.solve(lambda t, s: s[0], (Y0, Y0), T)


def test_non_finite_vector_field():
    with pytest.raises(NonFiniteError, match="not finite"):
        odekit.solve(lambda t, y: y / 0.0 * 0.0, Y0, T)
    with pytest.raises(NonFiniteError):
        odekit.solve(lambda t, y: torch.where(t > 0.5, y * math.nan, -y), Y0, T)
    with pytest.raises(NonFiniteError, match="fixed step"):
        odekit.solve(lambda t, y: torch.where(t > 0.5, y * math.inf, -y), Y0, T, method="rk4", step_size=0.1)


def test_step_size_underflow_on_finite_time_blow_up():
    # y' = y² from y(0) = 1 blows up at t = 1.
    with pytest.raises(StepSizeUnderflowError, match="step size fell"):
        odekit.solve(lambda t, y: y**2, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0]).double())


def test_max_steps_and_max_nfe():
    t = torch.tensor([0.0, 50.0], dtype=torch.float64)
    with pytest.raises(MaxStepsExceededError, match="max_num_steps=10"):
        odekit.solve(rotate, Y0, t, options={"max_num_steps": 10})
    with pytest.raises(MaxStepsExceededError, match="max_nfe=30"):
        odekit.solve(rotate, Y0, t, options={"max_nfe": 30})


def test_throw_false_returns_a_failed_solution_with_partial_results():
    t = torch.linspace(0, 50, 11, dtype=torch.float64)
    sol = odekit.solve(rotate, Y0, t, options={"max_num_steps": 40}, throw=False)
    assert not sol.ok and sol.status == "max_steps_exceeded" and "max_num_steps=40" in sol.message
    finite = torch.isfinite(sol.ys).all(dim=1)
    assert finite[0] and not finite[-1]
    # What was computed before the failure is still accurate.
    good = int(finite.sum())
    exact = torch.stack([torch.cos(t[:good]), -torch.sin(t[:good])], dim=1)
    assert (sol.ys[:good] - exact).abs().max() < 1e-6
