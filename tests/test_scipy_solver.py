"""The ``scipy_solver`` method: odekit's wrapper of ``scipy.integrate.solve_ivp``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import odekit
import odekit.solve.scipy_solver  # registers the method
from odekit.solve.errors import InvalidInputError, NonFiniteError, SolverError, StepSizeUnderflowError
from odekit.solve.field import VectorField
from odekit.solve.methods import METHODS
from odekit.solve.scipy_solver import SCIPY_SOLVERS, ScipySolver
from odekit.solve.solution import SolveStats
from odekit.solve.state import StateLayout

SOLVERS = list(SCIPY_SOLVERS)
D = torch.float64


def damped(t, y):
    """A damped oscillator in elementwise operations, so torch and NumPy round identically."""
    return torch.stack([y[1], -y[0] - 0.1 * y[1]])


def damped_np(t, y):
    return np.array([y[1], -y[0] - 0.1 * y[1]])


def flat_field(f, dtype: torch.dtype, n: int) -> VectorField:
    return VectorField(f, StateLayout((torch.Size([n]),), False, dtype, torch.device("cpu")), torch.float64)


def test_registered_with_its_options():
    method = METHODS["scipy_solver"]
    assert method.adaptive
    assert set(method.options) == {"solver", "min_step", "max_step", "first_step", "eps", "grid_points", "norm"}


@pytest.mark.parametrize("solver", SOLVERS)
def test_matches_direct_solve_ivp(solver):
    times = [0.0, 0.3, 1.0, 2.5]
    rtol, atol = 1e-8, 1e-10
    sol = odekit.solve(damped, torch.tensor([1.0, 0.0], dtype=D), torch.tensor(times, dtype=D),
                       method="scipy_solver", rtol=rtol, atol=atol, options={"solver": solver})
    ref = solve_ivp(damped_np, (times[0], times[-1]), [1.0, 0.0], method=solver, t_eval=times, rtol=rtol, atol=atol)
    assert ref.success and sol.ok
    assert sol.ys.dtype == D and sol.ys.shape == (4, 2)
    np.testing.assert_allclose(sol.ys.numpy(), ref.y.T, rtol=1e-12, atol=1e-14)
    assert sol.stats.extra["scipy_nfev"] == ref.nfev
    assert sol.stats.extra["scipy_njev"] == ref.njev
    assert sol.stats.extra["scipy_nlu"] == ref.nlu
    assert sol.stats.nfe >= ref.nfev  # the engine also counts scipy's finite-difference Jacobian calls
    assert sol.stats.steps_accepted > 0


def test_default_is_lsoda_and_step_options_reach_scipy():
    times = [0.0, 1.0, 2.0]
    kwargs = {"method": "scipy_solver", "rtol": 1e-6, "atol": 1e-8}
    options = {"max_step": 0.05, "first_step": 1e-3, "eps": 0.0, "grid_points": torch.zeros(3)}
    sol = odekit.solve(damped, torch.tensor([1.0, 0.0], dtype=D), torch.tensor(times, dtype=D), options=options,
                       **kwargs)
    ref = solve_ivp(damped_np, (0.0, 2.0), [1.0, 0.0], method="LSODA", t_eval=times, rtol=1e-6, atol=1e-8,
                    max_step=0.05, first_step=1e-3)
    np.testing.assert_allclose(sol.ys.numpy(), ref.y.T, rtol=1e-12, atol=1e-14)
    assert sol.stats.extra["scipy_nfev"] == ref.nfev
    # max_step = 0.05 over a span of 2 needs at least 40 steps.
    assert sol.stats.steps_accepted >= 40


@pytest.mark.parametrize("solver", ["RK45", "LSODA"])
def test_reverse_time(solver):
    times = [2.0, 1.5, 0.0]
    sol = odekit.solve(lambda t, y: -y, torch.tensor([3.0], dtype=D), torch.tensor(times, dtype=D),
                       method="scipy_solver", rtol=1e-10, atol=1e-12, options={"solver": solver})
    ref = solve_ivp(lambda t, y: -y, (2.0, 0.0), [3.0], method=solver, t_eval=times, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sol.ys[:, 0].numpy(), ref.y[0], rtol=1e-12)
    expected = 3.0 * np.exp(-(np.array(times) - 2.0))
    np.testing.assert_allclose(sol.ys[:, 0].numpy(), expected, rtol=1e-8)


def test_float32_state_keeps_float32():
    t = torch.linspace(0, 1, 5)
    sol = odekit.solve(lambda t, y: -2 * y, torch.ones(3), t, method="scipy_solver", rtol=1e-6, atol=1e-8,
                       options={"solver": "DOP853"})
    assert sol.ys.dtype == torch.float32 and sol.ys.shape == (5, 3)
    torch.testing.assert_close(sol.ys, torch.exp(-2 * t)[:, None].expand(5, 3), rtol=1e-5, atol=1e-6)


def test_tuple_state():
    def f(t, state):
        y, z = state
        return z.sum(dim=1), -y[:, None].expand(2, 3) / 3

    # y_i' = Σ_j z_ij, z_ij' = -y_i/3: with z_ij equal over j, s_i = Σ_j z_ij obeys y'' = -y.
    y0, z0 = torch.tensor([1.0, 0.0], dtype=D), torch.tensor([[0.0] * 3, [1 / 3] * 3], dtype=D)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=D)
    sol = odekit.solve(f, (y0, z0), t, method="scipy_solver", rtol=1e-10, atol=1e-12)
    ys, zs = sol.ys
    assert ys.shape == (3, 2) and zs.shape == (3, 2, 3)
    torch.testing.assert_close(ys[:, 0], torch.cos(t), rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(ys[:, 1], torch.sin(t), rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(zs[:, 1, 0], torch.cos(t) / 3, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_complex_state_rk45(dtype):
    # solve() only takes real states, so this drives the solver through the engine's field directly.
    times = [0.0, 1.0, math.pi]
    solver = ScipySolver({"solver": "RK45"}, 1e-10, 1e-12)
    stats = SolveStats()
    out = solver.solve_through(flat_field(lambda t, y: 1j * y, dtype, 1), torch.ones(1, dtype=dtype), times, stats)
    assert len(out) == 2 and all(o.dtype == dtype for o in out)
    expected = torch.exp(1j * torch.tensor(times[1:], dtype=D)).to(dtype)
    tol = 1e-8 if dtype == torch.complex128 else 1e-6
    torch.testing.assert_close(torch.cat(out), expected, rtol=tol, atol=tol)
    assert stats.extra["scipy_nfev"] > 0


@pytest.mark.parametrize("solver", ["Radau", "LSODA"])
def test_complex_state_rejected_by_real_only_solvers(solver):
    field = flat_field(lambda t, y: 1j * y, torch.complex128, 1)
    with pytest.raises(InvalidInputError, match="complex"):
        ScipySolver({"solver": solver}, 1e-6, 1e-8).solve_through(field, torch.ones(1, dtype=torch.complex128),
                                                                   [0.0, 1.0], SolveStats())
    assert field.nfe == 0


def test_single_time_returns_nothing():
    field = flat_field(lambda t, y: -y, D, 1)
    assert ScipySolver({}, 1e-6, 1e-8).solve_through(field, torch.ones(1, dtype=D), [0.0], SolveStats()) == []
    sol = odekit.solve(lambda t, y: -y, torch.ones(2, dtype=D), torch.zeros(1, dtype=D), method="scipy_solver")
    torch.testing.assert_close(sol.ys, torch.ones(1, 2, dtype=D))


def test_tolerance_tensors():
    atol = torch.tensor([1e-12, 1e-3], dtype=D)
    solver = ScipySolver({"solver": "RK45"}, 1e-9, atol)
    out = solver.solve_through(flat_field(damped, D, 2), torch.tensor([1.0, 0.0], dtype=D), [0.0, 1.0], SolveStats())
    ref = solve_ivp(damped_np, (0.0, 1.0), [1.0, 0.0], method="RK45", t_eval=[0.0, 1.0], rtol=1e-9,
                    atol=atol.numpy())
    np.testing.assert_allclose(out[0].numpy(), ref.y[:, -1], rtol=1e-12)
    with pytest.raises(InvalidInputError, match="components"):
        solver.solve_through(flat_field(lambda t, y: -y, D, 3), torch.ones(3, dtype=D), [0.0, 1.0], SolveStats())
    with pytest.raises(InvalidInputError, match="scalar rtol"):
        ScipySolver({"solver": "Radau"}, torch.tensor([1e-6, 1e-6]), 1e-8)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"solver": "euler"}, "solver=.euler. is not one of .RK45., .RK23."),
        ({"max_step": 0.0}, "max_step"),
        ({"min_step": -1.0}, "min_step"),
        ({"first_step": -0.1}, "first_step"),
        ({"solver": "RK45", "min_step": 1e-3}, "only by solver 'LSODA'"),
        ({"atol_vector": 1.0}, "unknown option"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(InvalidInputError, match=match):
        odekit.solve(lambda t, y: -y, torch.ones(1, dtype=D), torch.tensor([0.0, 1.0], dtype=D),
                     method="scipy_solver", options=options)


@pytest.mark.parametrize("solver", ["RK45", "LSODA"])
def test_blow_up_raises_with_scipys_message(solver):
    # y' = y², y(0) = 1 has y = 1/(1 - t): no solution past t = 1. (scipy's own LSODA never returns here.)
    args = (lambda t, y: y * y, torch.ones(1, dtype=D), torch.tensor([0.0, 0.5, 2.0], dtype=D))
    kwargs = {"method": "scipy_solver", "options": {"solver": solver}}
    with pytest.raises(StepSizeUnderflowError) as info:
        odekit.solve(*args, **kwargs)
    assert isinstance(info.value, SolverError)
    message = str(info.value)
    assert "t=1" in message or "t=0.99" in message
    if solver == "RK45":
        assert "Required step size is less than spacing between numbers" in message
    sol = odekit.solve(*args, throw=False, **kwargs)
    assert sol.status != "success" and sol.status == "step_size_underflow"
    assert sol.message == message
    assert torch.isnan(sol.ys[2]).all()
    # The error carries the states at the output times passed before the failure: y(0.5) = 2.
    assert len(info.value.states) == 1
    torch.testing.assert_close(info.value.states[0], torch.tensor([2.0], dtype=D), rtol=1e-5, atol=0)


@pytest.mark.parametrize("start", [0.5, -1.0])
@pytest.mark.parametrize("solver", ["LSODA", "BDF", "RK45", "Radau"])
def test_non_finite_field_is_an_error(solver, start):
    # LSODA returns NaN states with success, BDF and Radau die in their LU factorisation, and with
    # f(t0, y0) = NaN RK45's step size is NaN and it retries forever: none of that may pass.
    def f(t, y):
        return torch.full_like(y, math.nan) if t > start else -y

    args = (f, torch.ones(2, dtype=D), torch.tensor([0.0, 1.0], dtype=D))
    with pytest.raises(NonFiniteError):
        odekit.solve(*args, method="scipy_solver", options={"solver": solver})
    sol = odekit.solve(*args, method="scipy_solver", options={"solver": solver}, throw=False)
    assert sol.status == "non_finite" and torch.isnan(sol.ys[1]).all()


def test_backprop_through_scipy_is_refused():
    y0 = torch.ones(1, dtype=D, requires_grad=True)
    with pytest.raises(InvalidInputError, match="adjoint"):
        odekit.solve(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=D), method="scipy_solver")
    with torch.no_grad():
        sol = odekit.solve(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=D), method="scipy_solver")
    assert sol.ok


@pytest.mark.parametrize("solver", ["LSODA", "DOP853"])
def test_adjoint_gradient(solver):
    a = torch.tensor(-0.7, dtype=D, requires_grad=True)
    y0 = torch.tensor([1.5, -0.5], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.2], dtype=D)
    sol = odekit.solve(lambda t, y: a * y, y0, t, method="scipy_solver", gradient="adjoint", adjoint_params=(a,),
                       rtol=1e-10, atol=1e-12, options={"solver": solver})
    weights = torch.tensor([0.0, 2.0, 1.0], dtype=D)
    (weights[:, None] * sol.ys).sum().backward()
    with torch.no_grad():
        decay = torch.exp(a * t)
        expected_a = (weights * t * decay).sum() * y0.sum()
        expected_y0 = (weights * decay).sum().expand(2)
    torch.testing.assert_close(a.grad, expected_a, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(y0.grad, expected_y0, rtol=1e-7, atol=1e-9)
    assert sol.stats.nfe_backward > 0
    assert sol.stats.extra["backward_scipy_nfev"] > 0
