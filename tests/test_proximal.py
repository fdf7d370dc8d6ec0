"""Proximal implicit solvers (chapter 5): schemes, inner solvers, stats, gradients, stability."""

import math
import warnings

import numpy as np
import pytest
import torch
from problems import scipy_reference
from test_order import generic, slope

import odekit
from odekit.data.stiff_problems import HeatEquation, stiff_scalar, stiff_scalar_exact
from odekit.solve import InnerSolveError, InvalidInputError
from odekit.solve.implicit_schemes import LAMBDA_3, LAMBDA_3_PRINTED, SCHEMES, derivative_weights_at_first
from odekit.solve.inner import INNER_METHODS, InnerSolver, ProximalProblem
from odekit.solve.proximal import InnerSolveWarning

F64 = torch.float64
EXACT_INNER = {"inner": "newton", "inner_tol": 1e-13, "inner_res_tol": 1e-14, "inner_max_iters": 20}


def test_uniform_grid_bdf_coefficients_are_the_standard_ones():
    """REFERENCE.md §3: y_{n+1} − Σ a_j y_{n−j} = β h f_{n+1} with the corrected BDF4 indices."""
    standard = {
        1: ([1.0], 1.0),
        2: ([4 / 3, -1 / 3], 2 / 3),
        3: ([18 / 11, -9 / 11, 2 / 11], 6 / 11),
        4: ([48 / 25, -36 / 25, 16 / 25, -3 / 25], 12 / 25),
    }
    h = 0.1
    for order, (a, beta) in standard.items():
        w = derivative_weights_at_first([1.0 - h * j for j in range(order + 1)])
        # w_0 z + Σ w_j y_j = f  ⇔  z = −Σ (w_j / w_0) y_j + (1/w_0) f
        assert [-wj / w[0] for wj in w[1:]] == pytest.approx(a, rel=1e-12)
        assert 1.0 / w[0] == pytest.approx(beta * h, rel=1e-12)


def test_third_order_lambda_rounds_to_the_printed_one_and_meets_order_three():
    for row, printed in zip(LAMBDA_3, LAMBDA_3_PRINTED):
        assert [round(x, 2) for x in row] == pytest.approx(list(printed), abs=1e-12)
    assert SCHEMES["prox_ms3"].stage_times[-1] == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("method,order", [("prox_be", 1), ("prox_cn", 2), ("prox_bdf2", 2), ("prox_bdf3", 3),
                                          ("prox_bdf4", 4), ("prox_ms2", 2), ("prox_ms3", 3)])
def test_order_of_convergence_with_an_exact_inner_solve(method, order):
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    reference = scipy_reference(generic, y0, t)[-1]
    hs = {1: [0.02, 0.01, 0.005], 2: [0.04, 0.02, 0.01], 3: [0.08, 0.04, 0.02], 4: [0.04, 0.02, 0.01]}[order]
    errors = [
        (odekit.solve(generic, y0, t, method=method, step_size=h, options=EXACT_INNER).ys[-1] - reference)
        .abs().max().item()
        for h in hs
    ]
    assert order - 0.25 <= slope(hs, errors) <= order + 0.6


def _exact_backward_euler(s: float, steps: int) -> float:
    """Backward Euler for eq. 5.11 in closed form: h_{k+1} = (h_k + 50 s cos t_{k+1}) / (1 + 50 s)."""
    h = 1.0
    for k in range(1, steps + 1):
        h = (h + 50 * s * math.cos(k * s)) / (1 + 50 * s)
    return h


def test_proximal_backward_euler_approaches_backward_euler_as_the_inner_tolerance_shrinks():
    """§5.3.2: the gap to the exact implicit scheme is O(ε) in the inner tolerance."""
    s, steps = 0.01, 200
    t = torch.tensor([0.0, s * steps], dtype=F64)
    exact = _exact_backward_euler(s, steps)
    gaps = []
    for eps in (1e-3, 1e-5, 1e-7):
        options = {"inner": "gd", "inner_step": 0.5, "inner_tol": eps, "inner_res_tol": 0.0, "inner_max_iters": 500}
        y = odekit.solve(stiff_scalar, torch.tensor(1.0, dtype=F64), t, method="prox_be", step_size=s,
                         options=options).ys[-1]
        gaps.append(abs(y.item() - exact))
    assert gaps[0] > gaps[1] > gaps[2]
    for eps, gap in zip((1e-3, 1e-5, 1e-7), gaps):
        assert gap <= 5 * eps
    y_newton = odekit.solve(stiff_scalar, torch.tensor(1.0, dtype=F64), t, method="prox_be", step_size=s,
                            options=EXACT_INNER).ys[-1]
    assert y_newton.item() == pytest.approx(exact, abs=1e-12)
    # and backward Euler itself is first-order accurate on eq. 5.11
    assert abs(exact - stiff_scalar_exact(t[-1]).item()) < 1e-3


def test_energy_decreases_on_a_gradient_flow_at_any_step():
    """Proposition 10: proximal backward Euler is energy stable for a non-convex F, large s."""
    coupling = torch.tensor([[0.0, 0.3, 0.0], [0.3, 0.0, -0.2], [0.0, -0.2, 0.0]], dtype=F64)

    def energy(z):
        return ((z**2 - 1) ** 2).sum() / 4 + 0.5 * z @ coupling @ z

    def flow(t, z):  # f = −∇F
        return -(z**3 - z) - coupling @ z

    z0 = torch.tensor([0.1, -0.2, 1.7], dtype=F64)
    t = torch.linspace(0.0, 10.0, 21, dtype=F64)  # s = 0.5: explicit Euler at this step oscillates
    ys = odekit.solve(flow, z0, t, method="prox_be", options={"inner_tol": 1e-12, "inner_res_tol": 1e-12}).ys
    energies = torch.stack([energy(y) for y in ys])
    assert bool((energies[1:] <= energies[:-1] + 1e-12).all())
    assert energies[-1] < energies[0] - 0.5


@pytest.mark.parametrize("name", sorted(INNER_METHODS))
def test_each_inner_solver_converges_on_a_quadratic(name):
    """f = −∇F for F(z) = ½zᵀAz − bᵀz: the stage solves (I + σA) z = p + σb."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=F64))
    A = q @ torch.diag(torch.linspace(0.1, 20.0, 12, dtype=F64)) @ q.T
    b = torch.randn(12, generator=gen, dtype=F64)
    center = torch.randn(12, generator=gen, dtype=F64)
    sigma = 0.1
    problem = ProximalProblem(lambda t, z, side=0: b - A @ z, 0.0, center, sigma)
    solver = InnerSolver(name, tol=1e-12, res_tol=1e-11, max_iters=3000, memory=8,
                         step=0.3 if INNER_METHODS[name].default_step is not None else None)
    result = solver(problem, center.clone())
    exact = torch.linalg.solve(torch.eye(12, dtype=F64) + sigma * A, center + sigma * b)
    assert result.converged
    assert (result.z - exact).abs().max().item() < 1e-8


def test_fletcher_reeves_beats_plain_gradient_descent_on_an_ill_conditioned_stage():
    """Fig 5.4's message: momentum of eqs. 5.8–5.9 converges in fewer iterations than GD (5.7)."""
    problem = HeatEquation(64)
    stage = ProximalProblem(lambda t, y, side=0: problem(torch.tensor(t), y), 0.01, problem.y0, 0.01)
    counts = {}
    for name in ("gd", "fr"):
        result = InnerSolver(name, step=0.08, tol=0.0, res_tol=1e-8, max_iters=5000)(stage, problem.y0.clone())
        assert result.converged
        counts[name] = result.iterations
    assert counts["fr"] < counts["gd"] / 2


def test_divergent_inner_step_is_halved_and_recorded():
    problem = HeatEquation(64)
    t = torch.tensor([0.0, 0.1], dtype=F64)
    sol = odekit.solve(problem, problem.y0, t, method="prox_be", step_size=0.05,
                       options={"inner": "gd", "inner_step": 1.0, "inner_max_iters": 3000, "inner_tol": 1e-10})
    assert sol.stats.extra["inner_step_reductions"] >= 5  # σλ_max ≈ 780: GD needs η < 2/781
    assert sol.stats.extra["inner_failures"] == 0
    assert (sol.ys[-1] - problem.exact(0.1)).abs().max().item() < 1e-2


def test_stats_count_every_evaluation_and_the_inner_iterations():
    calls = 0

    def f(t, y):
        nonlocal calls
        calls += 1
        return stiff_scalar(t, y)

    t = torch.tensor([0.0, 0.5], dtype=F64)
    for method, evaluations_per_step in (("prox_be", 0), ("prox_cn", 1)):
        calls = 0
        sol = odekit.solve(f, torch.tensor(1.0, dtype=F64), t, method=method, step_size=0.05,
                           options={"inner": "fr", "inner_step": 0.1})
        extra = sol.stats.extra
        assert sol.stats.nfe == calls
        # FR spends one evaluation per iteration; CN one more per step for f(t_n, y_n)
        assert calls == extra["inner_iterations"] + evaluations_per_step * sol.stats.steps_accepted
        assert sol.stats.steps_accepted == 10 and extra["inner_solves"] == 10
        assert 1 <= extra["inner_iterations_max"] <= extra["inner_iterations"]
        assert extra["inner_failures"] == 0


def test_unconverged_inner_solves_warn_raise_or_report():
    problem = HeatEquation(64)
    t = torch.tensor([0.0, 0.1], dtype=F64)
    options = {"inner": "fr", "inner_max_iters": 3, "inner_tol": 1e-12, "inner_res_tol": 1e-12}
    with pytest.warns(InnerSolveWarning, match="did not converge.*inner_max_iters"):
        sol = odekit.solve(problem, problem.y0, t, method="prox_be", step_size=0.05, options=options)
    assert sol.stats.extra["inner_failures"] == 2
    with pytest.raises(InnerSolveError, match="did not converge at t=0.05"):
        odekit.solve(problem, problem.y0, t, method="prox_be", step_size=0.05,
                     options={**options, "on_inner_failure": "raise"})
    sol = odekit.solve(problem, problem.y0, t, method="prox_be", step_size=0.05,
                       options={**options, "on_inner_failure": "raise"}, throw=False)
    assert sol.status == "inner_not_converged" and "inner_max_iters" in sol.message


def test_bad_proximal_options_are_rejected_with_the_valid_choices():
    y0, t = torch.tensor(1.0, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidInputError, match="unknown inner solver 'cg'.*lbfgs"):
        odekit.solve(stiff_scalar, y0, t, method="prox_be", options={"inner": "cg"})
    with pytest.raises(InvalidInputError, match="inner_step"):
        odekit.solve(stiff_scalar, y0, t, method="prox_be", options={"inner": "fr", "inner_step": -1.0})
    with pytest.raises(InvalidInputError, match="order"):
        odekit.solve(stiff_scalar, y0, t, method="prox_bdf", options={"order": 5})
    with pytest.raises(InvalidInputError, match="unknown option.*'rtol_inner'"):
        odekit.solve(stiff_scalar, y0, t, method="prox_be", options={"rtol_inner": 1.0})


def test_stable_where_explicit_methods_blow_up():
    problem = HeatEquation(64)  # λ_max ≈ 15900: explicit stability needs h ≲ 2e-4
    t = torch.tensor([0.0, 0.2], dtype=F64)
    exact = problem.exact(0.2)
    explicit = odekit.solve(problem, problem.y0, t, method="rk4", step_size=0.01, throw=False)
    assert not explicit.ok or explicit.ys[-1].abs().max().item() > 1e6
    for method in ("prox_be", "prox_bdf2", "prox_ms2"):
        y = odekit.solve(problem, problem.y0, t, method=method, step_size=0.01).ys[-1]
        assert (y - exact).abs().max().item() < 1e-3


def test_adaptive_proximal_bdf_meets_its_tolerance():
    problem = HeatEquation(64)
    t = torch.tensor([0.0, 0.05, 0.5], dtype=F64)
    exact = torch.stack([problem.exact(float(x)) for x in t])
    errors, nfes = [], []
    for tol in (1e-3, 1e-5):
        sol = odekit.solve(problem, problem.y0, t, method="prox_bdf", rtol=tol, atol=tol)
        errors.append((sol.ys - exact).abs().max().item())
        nfes.append(sol.stats.nfe)
        assert errors[-1] < 30 * tol
    assert errors[1] < errors[0] / 10 and nfes[1] > nfes[0]
    assert nfes[0] < 2000  # dopri5 needs > 25,000 evaluations for this interval (stability-bound)


def test_dense_output_between_grid_points():
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([0.0, 0.333, 0.777, 1.5], dtype=F64)  # off the 0.01 grid
    reference = scipy_reference(generic, y0, t)
    for method, tol in (("prox_be", 2e-2), ("prox_bdf3", 1e-5)):
        ys = odekit.solve(generic, y0, t, method=method, step_size=0.01, options=EXACT_INNER).ys
        assert (ys - reference).abs().max().item() < tol


def test_odeint_front_and_tuple_states():
    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([[0.5]], dtype=F64))
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)

    def f(t, y):
        a, b = y
        return (-3 * a + b.reshape(1), -b)

    ys = odekit.odeint(f, y0, t, method="prox_bdf2", options={"step_size": 0.01, **EXACT_INNER})
    exact_b = 0.5 * torch.exp(-t)
    exact_a = 0.75 * torch.exp(-3 * t) + 0.25 * torch.exp(-t)  # a' = −3a + b
    assert (ys[1][:, 0, 0] - exact_b).abs().max().item() < 1e-3
    assert (ys[0][:, 0] - exact_a).abs().max().item() < 1e-3


class _Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.w1 = torch.nn.Parameter(0.5 * torch.randn(8, 3, generator=gen, dtype=F64))
        self.w2 = torch.nn.Parameter(0.5 * torch.randn(3, 8, generator=gen, dtype=F64))

    def forward(self, t, y):
        return self.w2 @ torch.tanh(self.w1 @ y) - 2.0 * y


@pytest.mark.parametrize("method,tol", [("prox_be", 2e-2), ("prox_bdf2", 2e-4), ("prox_cn", 2e-4)])
def test_gradients_backprop_adjoint_and_finite_differences_agree(method, tol):
    field = _Field()
    y0 = torch.tensor([0.3, -0.4, 0.8], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    options = {"step_size": 0.005, "inner_tol": 1e-13, "inner_res_tol": 1e-13, "inner_max_iters": 200}

    def loss(gradient, method=method):
        extra = {"rtol": 1e-11, "atol": 1e-12} if method == "dopri5" else {"options": options}
        ys = odekit.solve(field, y0, t, method=method, gradient=gradient, **extra).ys
        return (ys[1:] ** 2).sum() + ys[-1, 0]

    grads = {}
    for gradient, reference in (("backprop", method), ("adjoint", method), ("exact", "dopri5")):
        field.zero_grad()
        y0.grad = None
        value = loss("backprop" if gradient == "exact" else gradient, reference)
        value.backward()
        grads[gradient] = torch.cat([y0.grad.clone(), field.w1.grad.reshape(-1).clone()])
    # backprop differentiates the discrete solve: check it against central differences
    eps = 1e-6
    with torch.no_grad():
        for i in (0, 2):
            y0[i] += eps
            up = loss("backprop").item()
            y0[i] -= 2 * eps
            down = loss("backprop").item()
            y0[i] += eps
            assert grads["backprop"][i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-8)
    # both, and the adjoint solved backwards by the same proximal scheme, are within the scheme's
    # discretisation error of the exact gradient (dopri5 at tight tolerance)
    for gradient in ("backprop", "adjoint"):
        np.testing.assert_allclose(grads[gradient].numpy(), grads["exact"].numpy(), rtol=0, atol=tol)


def test_adjoint_of_a_proximal_solve_counts_backward_work():
    field = _Field()
    y0 = torch.tensor([0.3, -0.4, 0.8], dtype=F64)
    sol = odekit.solve(field, y0, torch.tensor([0.0, 1.0], dtype=F64), method="prox_be", gradient="adjoint",
                       options={"step_size": 0.1, "inner": "newton_krylov"})
    sol.ys[-1].sum().backward()
    assert sol.stats.nfe_backward > 0
    assert sol.stats.extra["backward_inner_solves"] == 10
    assert field.w1.grad is not None and torch.isfinite(field.w1.grad).all()


def test_no_warning_on_the_default_settings_of_a_stiff_problem():
    problem = HeatEquation(128)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = odekit.solve(problem, problem.y0, t, method="prox_be", step_size=0.1)
    assert (sol.ys[-1] - problem.exact(1.0)).abs().max().item() < 1e-5


def test_the_authors_lower_order_start_is_cheaper_and_one_order_lower():
    """BDF3 on a fixed grid: the one-step third-order start keeps order 3; start="lower_order" (BE, BDF2,
    then BDF3, the authors' start) takes one stage per step but leaves the start's O(h²) error."""
    import odekit

    def f(t, y):
        return -y + torch.sin(t)

    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    exact = 1.5 * math.exp(-2.0) + 0.5 * (math.sin(2.0) - math.cos(2.0))
    errors, stages = {}, {}
    for start in ("one_step", "lower_order"):
        for h in (0.1, 0.05):
            sol = odekit.solve(f, y0, t, method="prox_bdf3", step_size=h,
                               options={"inner": "newton", "inner_res_tol": 1e-14, "start": start})
            errors[start, h] = abs(sol.ys[-1].item() - exact)
            stages[start, h] = sol.stats.extra["inner_solves"]
    assert errors["one_step", 0.1] / errors["one_step", 0.05] > 6  # ≈ 2³
    assert errors["lower_order", 0.1] / errors["lower_order", 0.05] < 5  # ≈ 2² from the start
    assert stages["lower_order", 0.1] == 20 and stages["one_step", 0.1] == 18 + 2 * 6


@pytest.mark.parametrize("method,extra", [("prox_be", {"step_size": 0.1}), ("prox_cn", {"step_size": 0.1}),
                                          ("prox_bdf", {})])
def test_start_is_refused_where_the_scheme_needs_none(method, extra):
    import odekit
    from odekit.solve.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="option start applies to the multistep schemes"):
        odekit.solve(lambda t, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
                     method=method, options={"start": "lower_order"}, **extra)
