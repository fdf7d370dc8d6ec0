"""The stiff solvers (variable-order BDF/NDF) and method="auto", against SciPy and exact solutions."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import odekit
from odekit.data.stiff_problems import CLASSICAL_PROBLEMS, HeatEquation
from odekit.solve.auto import stability_boundary
from odekit.solve.bdf import rescale_matrix
from odekit.solve.errors import InvalidInputError, MaxStepsExceededError, NonFiniteError
from odekit.solve.tableaus import TABLEAUS

RTOL, ATOL = 1e-5, 1e-8


@functools.cache
def _cached_reference(problem, times: tuple[float, ...]) -> np.ndarray:
    ref = solve_ivp(problem.numpy, (0.0, times[-1]), problem.initial(), method="Radau", rtol=1e-12, atol=1e-14,
                    t_eval=times)
    return ref.y.T


def _reference(problem, times):
    return _cached_reference(problem, tuple(times))


@functools.cache
def _scipy_bdf_evaluations(problem) -> tuple[int, np.ndarray]:
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return problem.numpy(t, y)

    res = solve_ivp(f, (0.0, problem.t_end), problem.initial(), method="BDF", rtol=RTOL, atol=ATOL)
    return calls[0], res.y[:, -1]


def _solve(problem, method, times=None, **kwargs):
    times = times if times is not None else [0.0, problem.t_end]
    return odekit.solve(problem, problem.y0, torch.tensor(times, dtype=torch.float64), method=method,
                        rtol=kwargs.pop("rtol", RTOL), atol=kwargs.pop("atol", ATOL), **kwargs)


@pytest.mark.parametrize("name", ["robertson", pytest.param("van_der_pol", marks=pytest.mark.slow), "brusselator"])
@pytest.mark.parametrize("method", ["ndf", "bdf", "auto"])
def test_stiff_methods_match_scipy_bdf_in_error_and_cost(name, method):
    problem = CLASSICAL_PROBLEMS[name]
    ref = _reference(problem, [problem.t_end])[-1]
    scipy_calls, scipy_y = _scipy_bdf_evaluations(problem)
    sol = _solve(problem, method)
    assert sol.status == "success"
    error = np.abs(sol.ys[-1].numpy() - ref).max()
    scipy_error = np.abs(scipy_y - ref).max()
    assert error <= 10 * scipy_error + 1e-12
    # Finite-difference Jacobian columns are evaluations of f, counted in nfe for both.
    assert sol.stats.nfe <= 2 * scipy_calls
    assert sol.stats.extra["jacobians"] >= 1 and sol.stats.extra["lu_factorizations"] >= 1


def test_dense_output_inside_steps_matches_reference():
    problem = CLASSICAL_PROBLEMS["robertson"]
    times = [0.0, 0.4, 4.0, 40.0, 400.0, 4000.0]
    ref = _reference(problem, times)
    sol = _solve(problem, "ndf", times, rtol=1e-7, atol=1e-11)
    np.testing.assert_allclose(sol.ys.numpy(), ref, rtol=1e-4, atol=1e-9)


def test_heat_equation_large_grid_uses_sparse_factors_and_matches_exact():
    problem = HeatEquation(512)
    sol = odekit.solve(problem, problem.y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="ndf",
                       rtol=RTOL, atol=ATOL)
    assert sol.status == "success"
    assert (sol.ys[-1] - problem.exact(1.0)).abs().max() < 1e-8
    # A linear field: one Jacobian (by autograd, all 512 columns in one call) serves the whole solve.
    assert sol.stats.extra["jacobians"] == 1
    assert sol.stats.extra["autograd_jacobian_columns"] == 512
    dense = odekit.solve(problem, problem.y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="ndf",
                         rtol=RTOL, atol=ATOL, options={"linear_solver": "dense"})
    torch.testing.assert_close(dense.ys, sol.ys, rtol=0, atol=1e-12)


def test_newton_krylov_path_matches_exact():
    problem = HeatEquation(64)
    sol = odekit.solve(problem, problem.y0, torch.tensor([0.0, 0.05], dtype=torch.float64), method="ndf",
                       rtol=1e-6, atol=1e-9, options={"linear_solver": "krylov", "krylov_dim": 64})
    assert sol.status == "success"
    assert sol.stats.extra["jvps"] > 0 and sol.stats.extra["jacobians"] == 0
    assert (sol.ys[-1] - problem.exact(0.05)).abs().max() < 1e-6


@pytest.mark.parametrize("jacobian", ["autograd", "finite_difference"])
def test_jacobian_modes_agree(jacobian):
    problem = CLASSICAL_PROBLEMS["van_der_pol"]
    times = [0.0, 100.0]
    ref = _reference(problem, times)[-1]
    sol = _solve(problem, "ndf", times, options={"jacobian": jacobian})
    assert np.abs(sol.ys[-1].numpy() - ref).max() < 1e-3


def test_rescaling_the_differences_there_and_back_is_the_identity():
    for order in range(1, 6):
        there = rescale_matrix(order, 0.37) @ rescale_matrix(order, 1.0)
        back = rescale_matrix(order, 1 / 0.37) @ rescale_matrix(order, 1.0)
        np.testing.assert_allclose(back.T @ there.T, np.eye(order + 1), atol=1e-12)


def test_stability_boundaries_of_known_methods():
    assert stability_boundary(TABLEAUS["euler"]) == pytest.approx(2.0, abs=1e-9)
    assert stability_boundary(TABLEAUS["rk4"]) == pytest.approx(2.785293563405, abs=1e-8)
    assert 3.0 < stability_boundary(TABLEAUS["tsit5"]) < 4.0


# --- method="auto" ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,by", [("robertson", 0.1), ("brusselator", 2.0)])
def test_auto_detects_stiffness_early(name, by):
    """Robertson is stiff from its first transient (t ≈ 0.01); the Brusselator once its initial
    transient has passed (mild stiffness ~130, dopri5 needs 5× the evaluations)."""
    problem = CLASSICAL_PROBLEMS[name]
    sol = _solve(problem, "auto")
    assert sol.stats.switches and sol.stats.switches[0][1] == "ndf"
    assert sol.stats.switches[0][0] < by
    assert sol.stats.extra["switches"] == len(sol.stats.switches)


def test_auto_switches_back_in_the_fast_phases_of_a_relaxation_oscillator():
    sol = _solve(CLASSICAL_PROBLEMS["van_der_pol"], "auto")
    to_explicit = [t for t, solver in sol.stats.switches if solver == "tsit5"]
    # The jumps of the μ = 1000 oscillator come every ~807 time units.
    assert len(to_explicit) >= 2
    assert all(abs(t / 807.0 - round(t / 807.0)) < 0.01 for t in to_explicit)


@pytest.mark.parametrize("tolerances", [(1e-3, 1e-6), (1e-8, 1e-10)])
def test_auto_equals_tsit5_where_it_does_not_switch(tolerances):
    problem = CLASSICAL_PROBLEMS["lotka_volterra"]
    times = torch.linspace(0.0, problem.t_end, 7, dtype=torch.float64)
    auto = odekit.solve(problem, problem.y0, times, method="auto", rtol=tolerances[0], atol=tolerances[1])
    tsit5 = odekit.solve(problem, problem.y0, times, method="tsit5", rtol=tolerances[0], atol=tolerances[1])
    assert auto.stats.switches == []
    assert auto.stats.nfe == tsit5.stats.nfe and auto.stats.steps == tsit5.stats.steps
    torch.testing.assert_close(auto.ys, tsit5.ys, rtol=0, atol=0)


def test_auto_stays_explicit_on_an_oscillator():
    sol = odekit.solve(lambda t, y: torch.stack([y[1], -y[0]]), torch.tensor([1.0, 0.0], dtype=torch.float64),
                       torch.tensor([0.0, 50.0], dtype=torch.float64), method="auto", rtol=1e-7, atol=1e-9)
    assert sol.stats.switches == []
    assert abs(sol.ys[-1, 0].item() - math.cos(50.0)) < 1e-5


# --- gradients ------------------------------------------------------------------------------

def _robertson_loss(k, method, gradient):
    def f(t, y):
        slow, fast, square = k[0] * y[0], k[1] * y[1] * y[2], k[2] * y[1] ** 2
        return torch.stack([fast - slow, slow - fast - square, square])

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 10.0], dtype=torch.float64)
    kwargs = {"adjoint_params": (k,)} if gradient == "adjoint" else {}
    sol = odekit.solve(f, y0, t, method=method, rtol=1e-8, atol=1e-12, gradient=gradient, **kwargs)
    weights = torch.tensor([1.0, 1e4, 1.0], dtype=torch.float64)
    return (sol.ys[1:] * weights).sum(), sol


@pytest.mark.parametrize("method,gradient", [("ndf", "backprop"), ("ndf", "adjoint"), ("auto", "adjoint")])
def test_gradients_through_the_stiff_path_match_finite_differences(method, gradient):
    k = torch.tensor([0.04, 1e4, 3e7], dtype=torch.float64, requires_grad=True)
    loss, sol = _robertson_loss(k, method, gradient)
    (grad,) = torch.autograd.grad(loss, k)
    expected = []
    with torch.no_grad():
        for i in range(3):
            step = torch.zeros(3, dtype=torch.float64)
            step[i] = 1e-6 * k[i]
            plus, _ = _robertson_loss(k + step, "ndf", "backprop")
            minus, _ = _robertson_loss(k - step, "ndf", "backprop")
            expected.append(((plus - minus) / (2 * step[i])).item())
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4)
    if gradient == "adjoint":
        assert sol.stats.nfe_backward > 0 and sol.stats.extra["backward_jacobians"] >= 1


def test_adjoint_of_a_stiff_method_reads_the_forward_trajectory_by_default():
    """Solved backwards, Robertson's state blows up; the interpolating adjoint never solves it backwards."""
    k = torch.tensor([0.04, 1e4, 3e7], dtype=torch.float64, requires_grad=True)

    def f(t, y):
        slow, fast, square = k[0] * y[0], k[1] * y[1] * y[2], k[2] * y[1] ** 2
        return torch.stack([fast - slow, slow - fast - square, square])

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    sol = odekit.solve(f, y0, t, method="ndf", rtol=1e-8, atol=1e-12, gradient="adjoint", adjoint_params=(k,),
                       adjoint_options={"trajectory": "backsolve", "max_num_steps": 3000}, throw=False)
    sol.ys[-1, 1].backward()
    assert sol.status != "success" and "backward (adjoint) solve" in sol.message


# --- error paths ----------------------------------------------------------------------------

def _growth(t, y):
    return y


def test_exactly_singular_newton_matrix_retries_with_another_step():
    # BDF1's first c is h: with h = 1 the matrix I − c·1 is zero.
    sol = odekit.solve(_growth, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64),
                       method="bdf", options={"first_step": 1.0})
    assert sol.stats.extra["singular_matrices"] >= 1
    assert sol.ys[-1].item() == pytest.approx(math.exp(2.0), rel=1e-5)


def test_non_finite_field_stops_with_non_finite_error():
    def f(t, y):
        return torch.where(t > 1.0, torch.full_like(y, math.nan), -y)

    with pytest.raises(NonFiniteError, match="non-finite"):
        odekit.solve(f, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64),
                     method="ndf")


def test_non_finite_jacobian_is_named():
    def f(t, y):
        return -torch.sqrt(y.abs()) * torch.sign(y) * 1e3  # not differentiable at 0: an infinite slope

    with pytest.raises(NonFiniteError, match="Jacobian"):
        odekit.solve(f, torch.zeros(20, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
                     method="ndf", options={"jacobian": "autograd"})


@pytest.mark.parametrize("option,value", [("max_num_steps", 5), ("max_nfe", 40)])
def test_caps_stop_the_stiff_solvers(option, value):
    problem = CLASSICAL_PROBLEMS["robertson"]
    for method in ("ndf", "auto"):
        with pytest.raises(MaxStepsExceededError, match=option):
            _solve(problem, method, options={option: value})


@pytest.mark.parametrize("options,match", [
    ({"jacobian": "autgrad"}, "did you mean 'autograd'"),
    ({"max_order": 6}, "max_order"),
    ({"linear_solver": "lu"}, "linear_solver"),
    ({"safety": 0.8}, "unknown option"),
    ({"step_size": 0.1}, "unknown option"),
])
def test_bad_stiff_options_are_refused(options, match):
    with pytest.raises(InvalidInputError, match=match):
        _solve(CLASSICAL_PROBLEMS["robertson"], "ndf", options=options)


def test_complex_state_is_refused():
    with pytest.raises(InvalidInputError, match="real state"):
        odekit.solve(lambda t, y: -y, torch.ones(2, dtype=torch.complex128),
                     torch.tensor([0.0, 1.0], dtype=torch.float64), method="ndf")


def test_stiff_solver_objects_take_the_same_steps_as_the_strings():
    problem = CLASSICAL_PROBLEMS["robertson"]
    t = torch.tensor([0.0, problem.t_end], dtype=torch.float64)
    controller = odekit.PIController(rtol=RTOL, atol=ATOL)
    for solver, method, options in [(odekit.Auto(), "auto", {}),
                                    (odekit.NDF({"max_order": 3}), "ndf", {"max_order": 3})]:
        as_object = odekit.solve(problem, problem.y0, t, solver=solver, controller=controller)
        as_string = _solve(problem, method, options=options)
        assert as_object.stats.nfe == as_string.stats.nfe
        torch.testing.assert_close(as_object.ys, as_string.ys, rtol=0, atol=0)


def test_preconditioned_newton_krylov_takes_one_product_per_iteration():
    problem = HeatEquation(64)
    jacobian = torch.from_numpy(problem.jacobian())
    eye = torch.eye(64, dtype=torch.float64)

    def preconditioner(t, y, c):
        inverse = torch.linalg.inv(eye - c * jacobian)  # exact here: GMRES then needs one product
        return lambda v: inverse @ v

    t = torch.tensor([0.0, 0.05], dtype=torch.float64)
    plain = odekit.solve(problem, problem.y0, t, method="ndf", rtol=1e-6, atol=1e-9,
                         options={"linear_solver": "krylov", "krylov_dim": 64})
    preconditioned = odekit.solve(problem, problem.y0, t, method="ndf", rtol=1e-6, atol=1e-9,
                                  options={"linear_solver": "krylov", "krylov_dim": 64,
                                           "preconditioner": preconditioner})
    assert (preconditioned.ys[-1] - problem.exact(0.05)).abs().max() < 1e-6
    # With the exact inverse every GMRES solve stops after one product.
    assert preconditioned.stats.extra["jvps"] <= preconditioned.stats.extra["newton_iterations"]
    assert preconditioned.stats.extra["jvps"] < plain.stats.extra["jvps"]
    with pytest.raises(InvalidInputError, match="preconditioner"):
        odekit.solve(problem, problem.y0, t, method="ndf", options={"preconditioner": "ilu"})
