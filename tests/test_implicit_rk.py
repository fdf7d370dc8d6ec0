"""Fixed-step implicit Runge–Kutta methods: tableaus, orders, stiff accuracy, gradients, float32, options."""

import math
import warnings
from functools import cache

import numpy as np
import pytest
import torch
from problems import scipy_reference
from scipy.integrate import solve_ivp
from test_order import generic, slope

import odekit
import odekit.solve.implicit_rk  # registers the methods
from odekit.data.stiff_problems import HeatEquation
from odekit.solve import METHODS, InvalidInputError
from odekit.solve.implicit_rk import make_implicit_rk_solver
from odekit.solve.implicit_tableaus import IMPLICIT_TABLEAUS, ImplicitTableau
from odekit.solve.proximal import InnerSolveWarning

F64 = torch.float64
NAMES = sorted(IMPLICIT_TABLEAUS)
L_STABLE = ("implicit_euler", "radauIIA3", "radauIIA5", "sdirk2", "trbdf2")
A_STABLE_ONLY = ("implicit_midpoint", "trapezoid", "gl4", "gl6")  # |R(∞)| = 1: stiff modes are not damped


# --- the tableaus ----------------------------------------------------------------------------------------


@cache
def rooted_trees(order: int) -> tuple:
    """All rooted trees with ``order`` nodes, each a sorted tuple of its subtrees (1, 1, 2, 4, 9, 20, 48, …)."""
    if order == 1:
        return ((),)

    def forests(nodes, largest):
        # Multisets of trees with ``nodes`` nodes in all, listed in non-increasing order (no duplicates).
        if nodes == 0:
            yield ()
            return
        for size in range(min(nodes, largest[0]), 0, -1):
            for tree in rooted_trees(size):
                if (size, tree) <= largest:
                    for rest in forests(nodes - size, (size, tree)):
                        yield ((size, tree),) + rest

    return tuple(tuple(tree for _, tree in forest) for forest in forests(order - 1, (order, ())))


def elementary_weights(tree, A, c):
    """``Φ``'s inner vector: ``Π_children A·g(child)`` (ones for the single node)."""
    g = np.ones(len(c))
    for child in tree:
        g = g * (A @ elementary_weights(child, A, c))
    return g


def density(tree) -> int:
    """``γ(τ) = |τ| Π γ(children)``."""
    def size(t):
        return 1 + sum(size(ch) for ch in t)
    return size(tree) * math.prod(density(ch) for ch in tree)


def attained_order(tableau: ImplicitTableau) -> int:
    """The largest ``p`` with ``bᵀΦ(τ) = 1/γ(τ)`` for every tree of at most ``p`` nodes (Butcher's conditions)."""
    A, b, c = tableau.matrix(), np.array(tableau.b), np.array(tableau.c)
    p = 0
    while p < 8 and all(abs(b @ elementary_weights(t, A, c) - 1 / density(t)) < 1e-13 for t in rooted_trees(p + 1)):
        p += 1
    return p


def stability_function(tableau: ImplicitTableau, z: complex) -> complex:
    """``R(z) = 1 + z bᵀ(I − zA)⁻¹𝟙``: one step of the method on ``y' = λy`` multiplies ``y`` by ``R(hλ)``."""
    A, b = tableau.matrix(), np.array(tableau.b)
    s = len(b)
    return complex(1 + z * b @ np.linalg.solve(np.eye(s) - z * A, np.ones(s)))


def test_rooted_trees_are_counted_right():
    assert [len(rooted_trees(n)) for n in range(1, 8)] == [1, 1, 2, 4, 9, 20, 48]


@pytest.mark.parametrize("name", NAMES)
def test_tableau_meets_exactly_its_order_conditions(name):
    tableau = IMPLICIT_TABLEAUS[name]
    assert attained_order(tableau) == tableau.order


def test_tableau_structure():
    dirk = {"implicit_euler", "implicit_midpoint", "trapezoid", "sdirk2", "trbdf2"}
    assert {n for n, t in IMPLICIT_TABLEAUS.items() if t.diagonally_implicit} == dirk
    assert {n: t.explicit_stages for n, t in IMPLICIT_TABLEAUS.items() if t.explicit_stages} == {
        "trapezoid": (0,), "trbdf2": (0,)}
    assert {n for n, t in IMPLICIT_TABLEAUS.items() if t.stiffly_accurate} == set(L_STABLE) | {"trapezoid"}
    gamma = 1 - math.sqrt(2) / 2
    assert IMPLICIT_TABLEAUS["sdirk2"].a[0][0] == pytest.approx(gamma, abs=1e-15)
    assert IMPLICIT_TABLEAUS["trbdf2"].c[1] == pytest.approx(2 - math.sqrt(2), abs=1e-15)
    assert IMPLICIT_TABLEAUS["trbdf2"].a[2][2] == pytest.approx(gamma, abs=1e-15)  # the same SDIRK diagonal


@pytest.mark.parametrize("name", NAMES)
def test_stability_functions(name):
    tableau = IMPLICIT_TABLEAUS[name]
    # A-stable: |R| ≤ 1 on the imaginary axis (and R is analytic in the left half-plane for these tableaus).
    assert max(abs(stability_function(tableau, 1j * y)) for y in np.geomspace(1e-2, 1e4, 60)) <= 1 + 1e-12
    at_infinity = abs(stability_function(tableau, -1e9))
    if name in L_STABLE:
        assert at_infinity < 1e-7
    else:
        assert at_infinity == pytest.approx(1.0, abs=1e-6)


def test_tableau_validation():
    with pytest.raises(ValueError, match="sums to"):
        ImplicitTableau("bad", c=(0.5,), a=((0.4,),), b=(1.0,), order=1)
    with pytest.raises(ValueError, match="rows"):
        ImplicitTableau("bad", c=(0.5, 1.0), a=((0.5,), (0.5, 0.5)), b=(0.5, 0.5), order=1)
    with pytest.raises(ValueError, match="b sum"):
        ImplicitTableau("bad", c=(1.0,), a=((1.0,),), b=(0.9,), order=1)


def test_methods_are_registered_fixed_step_with_max_iters():
    for name in NAMES:
        method = METHODS[name]
        assert not method.adaptive
        assert {"step_size", "max_iters", "inner", "inner_tol"} <= set(method.options)


# --- convergence order on a smooth problem ---------------------------------------------------------------

T_ORDER = 1.5
# Step sizes per order that divide T_ORDER: in the asymptotic regime, errors far above round-off.
STEPS = {1: [0.03, 0.015, 0.0075], 2: [0.1, 0.05, 0.025], 3: [0.15, 0.075, 0.0375], 4: [0.3, 0.15, 0.075],
         5: [0.3, 0.15, 0.075], 6: [0.25, 0.125, 0.0625]}


@pytest.fixture(scope="module")
def order_reference():
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    return y0, scipy_reference(generic, y0, torch.tensor([0.0, T_ORDER], dtype=F64))[-1]


@pytest.mark.parametrize("name", NAMES)
def test_empirical_global_order(name, order_reference):
    y0, reference = order_reference
    order = IMPLICIT_TABLEAUS[name].order
    hs = STEPS[order]
    t = torch.tensor([0.0, T_ORDER], dtype=F64)
    errors = [(odekit.solve(generic, y0, t, method=name, step_size=h).ys[-1] - reference).norm().item() for h in hs]
    assert max(errors) > 1e-12  # far above round-off, or the slope would mean nothing
    assert order - 0.2 <= slope(hs, errors) <= order + 0.5


# --- stiff problems --------------------------------------------------------------------------------------

ROTATION = math.pi / 6
Q = torch.tensor([[math.cos(ROTATION), -math.sin(ROTATION)], [math.sin(ROTATION), math.cos(ROTATION)]], dtype=F64)
EIGENVALUES = (-1.0, -1e4)
STIFF_MATRIX = Q @ torch.diag(torch.tensor(EIGENVALUES, dtype=F64)) @ Q.T


def stiff_linear(t, y):
    """``y' = M y`` with eigenvalues −1 and −1e4 along rotated axes (both modes excited by ``y0``)."""
    return STIFF_MATRIX @ y


@pytest.fixture(scope="module")
def stiff_linear_reference():
    y0 = torch.tensor([1.0, 1.0], dtype=F64)
    sol = solve_ivp(lambda t, y: STIFF_MATRIX.numpy() @ y, (0.0, 1.0), y0.numpy(), method="Radau",
                    rtol=1e-10, atol=1e-12)
    return y0, torch.from_numpy(sol.y[:, -1].copy())


@pytest.mark.parametrize("name", NAMES)
def test_stiff_linear_system_is_the_stability_function_applied_per_mode(name, stiff_linear_reference):
    """With ``h|λ| = 500`` every method gives exactly ``Q diag(R(hλ)^N) Qᵀ y0``; the L-stable ones damp the stiff
    mode and agree with scipy's Radau, the others carry it along undamped (bounded, but wrong)."""
    y0, reference = stiff_linear_reference
    h, steps = 0.05, 20
    tableau = IMPLICIT_TABLEAUS[name]
    sol = odekit.solve(stiff_linear, y0, torch.tensor([0.0, 1.0], dtype=F64), method=name, step_size=h)
    y1 = sol.ys[-1]
    factors = torch.tensor([stability_function(tableau, h * lam).real ** steps for lam in EIGENVALUES], dtype=F64)
    assert torch.allclose(y1, Q @ (factors * (Q.T @ y0)), rtol=0, atol=1e-12)
    assert sol.stats.extra["inner_failures"] == 0
    error = (y1 - reference).abs().max().item() / reference.abs().max().item()
    if name in L_STABLE:
        assert error < {1: 0.05, 2: 1e-3, 3: 1e-5, 5: 1e-9}[tableau.order]
    else:
        assert 0.05 < error < 2


def test_explicit_method_blows_up_at_that_step(stiff_linear_reference):
    y0, _ = stiff_linear_reference
    sol = odekit.solve(stiff_linear, y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4", step_size=0.05,
                       throw=False)
    assert sol.status != "success" or sol.ys[-1].abs().max() > 1e10


VDP_MU, VDP_END = 1000.0, 0.5


def stiff_van_der_pol(t, y):
    """Van der Pol with μ = 1000: ``∂f₂/∂y₂ = μ(1 − y₁²) ≈ −1500`` along the solution, so ``h|λ| ≥ 15`` at h = 0.01."""
    return torch.stack([y[..., 1], VDP_MU * ((1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0])], dim=-1)


@pytest.fixture(scope="module")
def van_der_pol_reference():
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    sol = solve_ivp(lambda t, y: stiff_van_der_pol(None, torch.from_numpy(y)).numpy(), (0.0, VDP_END), y0.numpy(),
                    method="Radau", rtol=1e-10, atol=1e-12)
    return y0, torch.from_numpy(sol.y[:, -1].copy())


@pytest.mark.parametrize("name,bound", [("implicit_euler", 1e-2), ("sdirk2", 1e-4), ("trbdf2", 2e-4),
                                        ("radauIIA3", 2e-6), ("radauIIA5", 2e-7)])
def test_stiff_van_der_pol_against_scipy_radau(name, bound, van_der_pol_reference):
    y0, reference = van_der_pol_reference
    sol = odekit.solve(stiff_van_der_pol, y0, torch.tensor([0.0, VDP_END], dtype=F64), method=name, step_size=0.01)
    assert sol.stats.extra["inner_failures"] == 0
    assert ((sol.ys[-1] - reference).abs() / reference.abs()).max().item() < bound


@pytest.mark.parametrize("name", ["sdirk2", "radauIIA3"])
def test_large_stiff_system_through_newton_krylov(name):
    """The heat equation on 80 points (``h·λ_max ≈ 125``): systems above 64 unknowns go to Newton–Krylov.

    Each Fourier mode must come out multiplied by ``R(−hλ_k)^N`` (the solves are exact), and the result must
    be close to the exact solution (L-stable methods damp the unresolved modes)."""
    heat = HeatEquation(n=80, initial="bump")
    h, steps = 0.005, 4
    sol = odekit.solve(heat, heat.y0, torch.tensor([0.0, h * steps], dtype=F64), method=name, step_size=h)
    factors = np.array([stability_function(IMPLICIT_TABLEAUS[name], -h * lam).real ** steps
                        for lam in heat.eigenvalues])
    predicted = np.fft.ifft(factors * np.fft.fft(heat.y0.numpy())).real
    assert np.abs(sol.ys[-1].numpy() - predicted).max() < 1e-11
    exact = heat.exact(h * steps)
    assert ((sol.ys[-1] - exact).abs().max() / exact.abs().max()).item() < {"sdirk2": 5e-3, "radauIIA3": 1e-3}[name]
    assert sol.stats.extra["inner_failures"] == 0


# --- gradients -------------------------------------------------------------------------------------------


def damped_field(t, y, w):
    """Nonlinear, non-autonomous and mildly stiff (``h λ ≈ −2`` at h = 0.1): the stage solves matter."""
    return torch.stack([w[0] * y[..., 1] - y[..., 0] ** 3 / 3 - 20 * y[..., 0],
                        -y[..., 0] + w[1] * torch.cos(t) * y[..., 1]], dim=-1)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_through_the_stage_solves_wrt_y0_and_parameters(name):
    """Backprop through the inner iterations is the exact derivative of the discrete solve (default tolerances)."""
    y0 = torch.tensor([0.6, -0.9], dtype=F64, requires_grad=True)
    w = torch.tensor([0.8, -0.4], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.25, 0.5], dtype=F64)

    def run(y0, w):
        return odekit.solve(lambda tt, y: damped_field(tt, y, w), y0, t, method=name, step_size=0.1).ys

    assert torch.autograd.gradcheck(run, (y0, w))


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_wrt_output_times(name):
    """Time gradients are the continuous ones (``∂y(t_i)/∂t_i = f``, see ``solve``); they differ from the
    derivative of the discrete map by ``O(δ^p)`` on a grid of spacing ``δ``, hence the order-scaled tolerance."""
    y0 = torch.tensor([0.6, -0.9], dtype=F64, requires_grad=True)
    delta = 0.01
    t = torch.tensor([0.3, 0.3 + delta, 0.3 + 2 * delta], dtype=F64, requires_grad=True)
    tol = 2 * delta ** IMPLICIT_TABLEAUS[name].order + 1e-8

    def run(y0, t):
        return odekit.solve(generic, y0, t, method=name).ys

    assert torch.autograd.gradcheck(run, (y0, t), atol=tol, rtol=1e-3)


@pytest.mark.parametrize("name", ["radauIIA5", "sdirk2"])
def test_parameter_gradient_on_a_stiff_problem_matches_finite_differences(name):
    """d y(T)/dμ for Van der Pol with μ = 1000 (Newton on a stiff nonlinear system at every stage)."""
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 0.1], dtype=F64)

    def final(mu):
        def f(tt, y):
            return torch.stack([y[1], mu * ((1 - y[0] ** 2) * y[1] - y[0])])

        return odekit.solve(f, y0, t, method=name, step_size=0.01).ys[-1]

    mu = torch.tensor(VDP_MU, dtype=F64, requires_grad=True)
    weights = torch.tensor([1.0, 0.3], dtype=F64)
    (grad,) = torch.autograd.grad(final(mu) @ weights, mu)
    step = 1e-3
    with torch.no_grad():
        fd = ((final(mu + step) - final(mu - step)) @ weights) / (2 * step)
    assert grad.item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-12)


# --- float32, options, details ----------------------------------------------------------------------------

SCALE = 500.0


def scaled_van_der_pol(t, y):
    """Van der Pol (μ = 5) in units where the state reaches ~1e3, a test of the scale-relative stopping rule."""
    x = y / SCALE
    return SCALE * torch.stack([x[..., 1], 5.0 * (1 - x[..., 0] ** 2) * x[..., 1] - x[..., 0]], dim=-1)


@pytest.mark.parametrize("name", NAMES)
def test_float32_stage_solves_converge(name):
    t = torch.tensor([0.0, 1.0], dtype=torch.float32)
    y0 = torch.tensor([2.0 * SCALE, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnerSolveWarning)
        sol32 = odekit.solve(scaled_van_der_pol, y0, t, method=name, step_size=0.05)
    assert sol32.stats.extra["inner_failures"] == 0
    sol64 = odekit.solve(scaled_van_der_pol, y0.double(), t.double(), method=name, step_size=0.05)
    assert sol32.ys.dtype == torch.float32
    assert ((sol32.ys[-1].double() - sol64.ys[-1]).abs().max() / sol64.ys[-1].abs().max()).item() < 1e-5


def test_iteration_cap_warns_and_counts_failures():
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    with pytest.warns(InnerSolveWarning, match="did not converge"):
        sol = odekit.solve(generic, y0, t, method="radauIIA3", step_size=0.1,
                           options={"inner": "fixed_point", "max_iters": 2})
    assert sol.stats.extra["inner_failures"] == 5
    assert sol.stats.extra["inner_iterations_max"] == 2


@pytest.mark.parametrize("name", ["gl4", "trbdf2"])
def test_other_inner_methods_and_forward_mode_products_agree_with_newton(name):
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    base = odekit.solve(generic, y0, t, method=name, step_size=0.1)
    for options in ({"inner": "fixed_point"}, {"inner": "newton_krylov"}, {"jvp": "forward_ad"}):
        with warnings.catch_warnings():
            warnings.simplefilter("error", InnerSolveWarning)
            other = odekit.solve(generic, y0, t, method=name, step_size=0.1, options=options)
        assert torch.allclose(other.ys, base.ys, rtol=0, atol=1e-12), options
    # torchdiffeq's functional iteration needs far more iterations than Newton's
    fixed_point = odekit.solve(generic, y0, t, method=name, step_size=0.1, options={"inner": "fixed_point"})
    assert fixed_point.stats.extra["inner_iterations"] > 2 * base.stats.extra["inner_iterations"]


def test_option_validation():
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for options in ({"max_iters": 0}, {"max_iters": 2.5}, {"inner": "bogus"}, {"inner_tol": -1.0},
                    {"jvp": "exact"}, {"inner_step": 0.5}):
        with pytest.raises(InvalidInputError):
            odekit.solve(lambda tt, y: -y, y0, t, method="radauIIA5", step_size=0.1, options=options)


def test_backward_in_time_returns_to_the_start():
    """From the reference y(1) back to t = 0 (a decreasing t; the c = 1 stage is then the earlier end)."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    y_end = scipy_reference(generic, y0, torch.tensor([0.0, 1.0], dtype=F64))[-1]
    for name, h, bound in (("radauIIA5", 0.1, 1e-7), ("trbdf2", 0.02, 1e-4), ("gl4", 0.1, 1e-5)):
        back = odekit.solve(generic, y_end, torch.tensor([1.0, 0.0], dtype=F64), method=name, step_size=h).ys[-1]
        assert (back - y0).abs().max().item() < bound, name


def test_dense_output_is_linear_and_every_step_knows_its_start_slope():
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    ys = odekit.solve(generic, y0, torch.tensor([0.0, 0.03, 0.1], dtype=F64), method="gl4", step_size=0.1).ys
    assert torch.allclose(ys[1], 0.7 * y0 + 0.3 * ys[2], rtol=0, atol=1e-15)

    def field(t, y, side=0):
        return generic(torch.tensor(t, dtype=F64), y)

    trapezoid = make_implicit_rk_solver(IMPLICIT_TABLEAUS["trapezoid"], {})
    _, K = trapezoid.step(field, 0.2, y0, 0.1, None)
    assert torch.equal(trapezoid.start_slope(K), field(0.2, y0))
    radau = make_implicit_rk_solver(IMPLICIT_TABLEAUS["radauIIA3"], {})
    _, K = radau.step(field, 0.2, y0, 0.1, None)
    assert torch.equal(radau.start_slope(K), field(0.2, y0))


@pytest.mark.parametrize("name", ["implicit_euler", "radauIIA3"])
def test_stages_at_the_step_end_are_evaluated_from_inside_with_perturb(name):
    """``f`` jumps at the grid point t = 0.5: with ``perturb`` the end stage sees the value before the jump."""
    def pulse(t, y):
        return torch.where(t < 0.5, torch.ones_like(y), torch.zeros_like(y))

    y0 = torch.zeros(1, dtype=F64)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    plain = odekit.solve(pulse, y0, t, method=name, step_size=0.5).ys[-1]
    perturbed = odekit.solve(pulse, y0, t, method=name, step_size=0.5, options={"perturb": True}).ys[-1]
    assert perturbed.item() == pytest.approx(0.5, abs=1e-14)  # exact: f ≡ 1 on the open step
    assert plain.item() != pytest.approx(0.5, abs=1e-3)


def test_complex_states_with_dense_newton():
    """``y' = iωy`` on a complex state: each step multiplies by ``R(iωh)``; GMRES-based inner methods refuse."""
    omega, h = 3.0, 0.1
    y0 = torch.tensor([1.0 + 0.5j, -0.3j], dtype=torch.complex128)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    for name in ("gl4", "sdirk2", "trapezoid"):
        y_end = odekit.solve(lambda tt, y: 1j * omega * y, y0, t, method=name, step_size=h).ys[-1]
        factor = stability_function(IMPLICIT_TABLEAUS[name], 1j * omega * h) ** 5
        assert torch.allclose(y_end, factor * y0, rtol=0, atol=1e-12), name
    with pytest.raises(InvalidInputError, match="complex"):
        odekit.solve(lambda tt, y: 1j * omega * y, y0, t, method="gl4", step_size=h, options={"inner": "newton_krylov"})


def test_adjoint_gradients_agree_with_backprop():
    """The adjoint pass solves the augmented system (state, adjoint, parameters) with the same method; the
    continuous adjoint differs from the discrete derivative by O(h^5) (1e-7 here, 32x less at h/2)."""
    y0 = torch.tensor([0.6, -0.9], dtype=F64, requires_grad=True)
    w = torch.tensor([0.8, -0.4], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    grads = []
    for gradient in ("backprop", "adjoint"):
        ys = odekit.solve(lambda tt, y: damped_field(tt, y, w), y0, t, method="radauIIA5", step_size=0.025,
                          gradient=gradient, adjoint_params=(w,)).ys
        grads.append(torch.autograd.grad(ys[-1].sum(), (y0, w)))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=5e-7), (a - b).abs().max()
