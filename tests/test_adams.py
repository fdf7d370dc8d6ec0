"""Fixed-grid Adams methods: derived weights, empirical orders, NFE, gradients, non-uniform grids."""

import math
import warnings
from fractions import Fraction as F

import numpy as np
import pytest
import torch
from problems import scipy_reference
from test_order import generic, slope

import odekit
import odekit.solve.adams
from odekit.solve import InvalidInputError
from odekit.solve.adams import (
    AdamsSolver,
    CorrectorWarning,
    bashforth,
    exact_weights,
    float_weights,
    make_adams_solver,
    moulton,
)

# At torchdiffeq's default tolerances the corrector often stops at max_iters at these steps (it
# compares successive increments to 1e-7 relative / 1e-9 absolute); the tests that count on it say so.
pytestmark = pytest.mark.filterwarnings("ignore:.*corrector iteration did not converge")
F64 = torch.float64
Y0 = torch.tensor([1.0, 0.5], dtype=F64)
T_END = 3.0


@pytest.fixture(scope="module")
def reference():
    return scipy_reference(generic, Y0, torch.tensor([0.0, T_END], dtype=F64))[-1]


def riccati(t, y):
    """y' = 1 + y², y(0) = 0: y = tan t, whose derivatives grow steeply towards t = π/2."""
    return 1 + y * y


def test_uniform_weights_are_the_classical_ones():
    assert bashforth(1) == (1,)
    assert bashforth(2) == (F(3, 2), F(-1, 2))
    assert bashforth(3) == (F(23, 12), F(-16, 12), F(5, 12))
    assert bashforth(4) == (F(55, 24), F(-59, 24), F(37, 24), F(-9, 24))
    assert moulton(1) == (1,)
    assert moulton(2) == (F(1, 2), F(1, 2))
    assert moulton(3) == (F(5, 12), F(8, 12), F(-1, 12))
    assert moulton(4) == (F(9, 24), F(19, 24), F(-5, 24), F(1, 24))
    # Further down the tables: the last AB5 weight and the first AM6 weight.
    assert bashforth(5)[-1] == F(251, 720) and moulton(6)[0] == F(475, 1440)
    for k in range(1, 13):
        assert sum(bashforth(k)) == 1 and sum(moulton(k)) == 1  # consistency: f ≡ 1 is integrated exactly
        # The float64 quadrature agrees with the exact weights on the uniform nodes.
        assert float_weights([-j for j in range(k)], 0.0, 1.0) == pytest.approx(
            [float(x) for x in bashforth(k)], rel=1e-12, abs=1e-12)
        assert float_weights([1 - j for j in range(k)], 0.0, 1.0) == pytest.approx(
            [float(x) for x in moulton(k)], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("k", [2, 4, 7, 12])
def test_weights_integrate_polynomials_of_degree_below_k_exactly_on_a_non_uniform_grid(k):
    rng = np.random.default_rng(k)
    spacing = rng.uniform(0.4, 1.6, size=k)
    past = -np.concatenate([[0.0], np.cumsum(spacing[: k - 1])])  # t_n = 0 > t_{n−1} > … (scaled)
    end = float(spacing[-1])  # this step's length differs from every earlier one
    for nodes in (list(past), [end] + list(past[: k - 1])):  # Bashforth; Moulton (same number of nodes)
        beta = float_weights(nodes, 0.0, end)
        exact = exact_weights([F(x) for x in nodes], 0, F(end))
        for degree in range(k):
            integral = end**degree / (degree + 1)  # (1/end) ∫_0^end s^degree ds
            terms = [b * x**degree for b, x in zip(beta, nodes)]
            # Relative to the terms' size: at degree 11 they cancel by many orders of magnitude.
            assert sum(terms) == pytest.approx(integral, abs=1e-13 * sum(abs(x) for x in terms))
            assert sum(b * F(x) ** degree for b, x in zip(exact, nodes)) == F(end) ** degree / (degree + 1)
        assert float(sum(exact)) == pytest.approx(1.0, rel=1e-14)
    if k > 1:  # … and not degree k, so the grid is really non-uniform enough to matter
        beta = float_weights(list(past), 0.0, end)
        assert abs(sum(b * x**k for b, x in zip(beta, past)) - end**k / (k + 1)) > 1e-6


@pytest.mark.parametrize("name,max_order,order,hs", [
    ("explicit_adams", 4, 3, [0.1, 0.05, 0.025]),
    ("explicit_adams", 5, 4, [0.05, 0.025, 0.0125]),
    ("implicit_adams", 4, 4, [0.1, 0.05, 0.025]),
    ("implicit_adams", 5, 5, [0.2, 0.1, 0.05]),
    ("fixed_adams", 5, 5, [0.2, 0.1, 0.05]),
])
def test_global_order(name, max_order, order, hs, reference):
    """Bashforth of order max_order − 1; Moulton one higher. The first Adams steps run at order 3
    (Bashforth) or 4 (Moulton) before the history fills, which costs one local error of that
    order: the global order is still max_order − 1 / max_order."""
    t = torch.tensor([0.0, T_END], dtype=F64)
    errors = [(odekit.solve(generic, Y0, t, method=name, step_size=h, options={"max_order": max_order}).ys[-1]
               - reference).norm().item() for h in hs]
    assert order - 0.3 <= slope(hs, errors) <= order + 0.7


def test_implicit_adams_of_order_12_is_far_more_accurate_than_rk4_at_the_same_step():
    t = torch.tensor([0.0, 1.4], dtype=F64)
    y0 = torch.zeros(1, dtype=F64)
    exact = math.tan(1.4)
    error = {m: abs(odekit.solve(riccati, y0, t, method=m, step_size=0.0125).ys[-1].item() - exact)
             for m in ("rk4", "implicit_adams")}
    assert error["implicit_adams"] < error["rk4"] / 30


def test_explicit_adams_is_far_more_accurate_than_rk4_at_the_same_cost():
    """One evaluation per step against rk4's four: a quarter of rk4's step for the same NFE.

    (At the same step size it is not: the third step is an order-3 Bashforth step whose local
    error alone exceeds rk4's global one; and above order 8 Bashforth's stability interval,
    about 0.003/|∂f/∂y| at order 11, is too short for these steps, in torchdiffeq too.)
    """
    t = torch.tensor([0.0, 1.4], dtype=F64)
    y0 = torch.zeros(1, dtype=F64)
    rk4 = odekit.solve(riccati, y0, t, method="rk4", step_size=0.05)
    adams = odekit.solve(riccati, y0, t, method="explicit_adams", step_size=0.0125, options={"max_order": 8})
    assert adams.stats.nfe <= rk4.stats.nfe + 6  # the two rk4 starter steps
    exact = math.tan(1.4)
    assert abs(adams.ys[-1].item() - exact) < abs(rk4.ys[-1].item() - exact) / 10


def _one_step(name, h, field, exact, t0=1.0, max_order=12):
    """One step from an exact history of max_order − 1 slopes (no starter errors): ``(y1, y(t0 + h))``."""
    solver = make_adams_solver(name, {"max_order": max_order}, 1e-15, 1e-15, implicit=name == "implicit_adams")
    times = tuple(t0 - j * h for j in range(1, max_order - 1))
    state = (times, tuple(field(s, exact(s)) for s in times))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorrectorWarning)
        y1, _ = solver.step(field, t0, exact(t0), h, state)
    return y1.item(), exact(t0 + h).item()


@pytest.mark.parametrize("name,order", [("explicit_adams", 11), ("implicit_adams", 12)])
def test_a_step_with_a_full_history_has_order_max_order(name, order):
    """Bashforth 11 and Moulton 12 (max_order 12): local errors O(h^12), O(h^13); rk4's is O(h^5)."""
    def exp(t):
        return torch.tensor([math.exp(t)], dtype=F64)
    hs = [0.3, 0.15]
    errors = [abs(y1 / y - 1) for y1, y in (_one_step(name, h, lambda t, y, side=0: y, exp) for h in hs)]
    assert order + 1 - 1.5 <= slope(hs, errors) <= order + 1 + 1.5  # slopes still rise towards order + 1 here
    rk4 = odekit.solve(lambda t, y: y, torch.ones(1, dtype=F64), torch.tensor([0.0, hs[-1]], dtype=F64), method="rk4")
    assert errors[-1] < 1e-4 * abs(rk4.ys[-1].item() / math.exp(hs[-1]) - 1)
    # Crisply: exact for the solution t^order (f of degree order − 1), not for t^(order + 1).
    for degree, exact in ((order, True), (order + 1, False)):
        def field(t, y, side=0, d=degree):
            return torch.full_like(y, d * t ** (d - 1))
        y1, y = _one_step(name, 0.1, field, lambda t, d=degree: torch.tensor([t**d], dtype=F64))
        assert (abs(y1 - y) < 1e-13 * abs(y)) == exact


def test_nfe_is_one_per_step_plus_corrector_iterations():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    steps, starter = 10, 2  # two rk4 starter steps of four evaluations each (f(t0, y0) included)
    explicit = odekit.solve(generic, Y0, t, method="explicit_adams", step_size=0.1)
    assert explicit.stats.nfe == 4 * starter + (steps - starter)
    assert explicit.stats.extra["starter_steps"] == starter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorrectorWarning)  # one iteration rarely meets the tolerance
        pece = odekit.solve(generic, Y0, t, method="implicit_adams", step_size=0.1, options={"max_iters": 1})
    assert pece.stats.extra["corrector_iterations"] == steps - starter
    assert pece.stats.nfe == 4 * starter + 2 * (steps - starter)

    default = odekit.solve(generic, Y0, t, method="implicit_adams", step_size=0.1)
    iterations = default.stats.extra["corrector_iterations"]
    assert steps - starter < iterations <= 4 * (steps - starter)
    assert default.stats.nfe == 4 * starter + (steps - starter) + iterations
    assert default.stats.nfe > pece.stats.nfe


def test_corrector_that_does_not_converge_warns_and_keeps_going():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.warns(CorrectorWarning, match="corrector iteration did not converge"):
        sol = odekit.solve(generic, Y0, t, method="implicit_adams", step_size=0.1, rtol=1e-16, atol=1e-16,
                           options={"max_iters": 2})
    assert sol.stats.extra["corrector_failures"] == 8
    assert sol.stats.nfe == 4 * 2 + 8 * (1 + 2)
    assert bool(torch.isfinite(sol.ys).all())


def test_tolerances_may_be_tensors_of_the_state_size():
    solver = AdamsSolver("implicit_adams", implicit=True, rtol=torch.tensor([0.0, 1e-3], dtype=F64),
                         atol=torch.tensor([1e-9, 0.0], dtype=F64))
    old = torch.tensor([1.0, 1.0], dtype=F64)
    assert solver._agree(old, old + torch.tensor([1e-10, 5e-4], dtype=F64))
    assert not solver._agree(old, old + torch.tensor([1e-8, 5e-4], dtype=F64))
    assert not solver._agree(old, old + torch.tensor([1e-10, 5e-3], dtype=F64))


def _warped_grid(n, warp=0.15):
    """n + 1 smoothly non-uniform times on [0, T_END] (spacing varies by ±warp)."""
    u = torch.linspace(0, 1, n + 1, dtype=F64)
    return T_END * (u + warp * torch.sin(2 * math.pi * u) / (2 * math.pi))


@pytest.mark.parametrize("name,order", [("explicit_adams", 4), ("implicit_adams", 5)])
def test_non_uniform_grid_of_output_times_keeps_the_order(name, order, reference, monkeypatch):
    ns = [30, 60, 120]
    hs = [T_END / n for n in ns]

    def errors():
        return [(odekit.solve(generic, Y0, _warped_grid(n), method=name, options={"max_order": 5}).ys[-1]
                 - reference).norm().item() for n in ns]

    assert slope(hs, errors()) >= order - 0.3
    # The check has teeth: uniform weights on this grid (torchdiffeq's) lose the order.
    uniform_weights = AdamsSolver._weights
    monkeypatch.setattr(AdamsSolver, "_weights", lambda self, kind, k, nodes, uniform, y0:
                        uniform_weights(self, kind, k, nodes, True, y0))
    assert slope(hs, errors()) < 2.5


def test_clipped_last_step_is_as_accurate_as_the_others():
    t_full = torch.tensor([0.0, 1.0], dtype=F64)
    t_clip = torch.tensor([0.0, 1.05], dtype=F64)  # last step 0.05 after steps of 0.1
    ref = scipy_reference(generic, Y0, torch.tensor([0.0, 1.0, 1.05], dtype=F64))
    for name in ("explicit_adams", "implicit_adams"):
        full = odekit.solve(generic, Y0, t_full, method=name, step_size=0.1, options={"max_order": 5}).ys[-1]
        clip = odekit.solve(generic, Y0, t_clip, method=name, step_size=0.1, options={"max_order": 5}).ys[-1]
        assert (clip - ref[2]).norm() < 2 * (full - ref[1]).norm() + 1e-9


def test_gradcheck_wrt_y0_and_t():
    def f(t, y):
        return torch.stack([torch.sin(t) * y[1] - 0.5 * y[0] ** 2, torch.cos(y[0]) - 0.3 * t * y[1]])

    y0 = torch.tensor([0.4, -0.7], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=True)

    def run(y0, t):
        return odekit.solve(f, y0, t, method="implicit_adams", step_size=0.1).ys

    # Time gradients are those of the continuous problem (exact up to the discretisation error).
    assert torch.autograd.gradcheck(run, (y0, t), atol=1e-5, rtol=1e-5)
    # With respect to y0 backprop is the exact derivative of the discrete solve (outputs between steps too).
    t_many = torch.tensor([0.0, 0.35, 0.6, 1.0], dtype=F64)
    for name in ("implicit_adams", "explicit_adams"):
        assert torch.autograd.gradcheck(
            lambda y0, name=name: odekit.solve(f, y0, t_many, method=name, step_size=0.1).ys, (y0,))


def test_complex_and_float32_states_and_backwards_in_time():
    def omega(t, y):
        return 1j * y
    sol = odekit.solve(omega, torch.ones(1, dtype=torch.complex128), torch.tensor([0.0, 2.0], dtype=F64),
                       method="implicit_adams", step_size=0.02, options={"max_order": 6})
    assert sol.ys.dtype == torch.complex128
    assert abs(sol.ys[-1].item() - complex(math.cos(2), math.sin(2))) < 1e-10
    def decay(t, y):
        return -y * torch.cos(t)
    sol = odekit.solve(decay, torch.ones(3), torch.linspace(0, 3, 4), method="explicit_adams", step_size=0.01,
                       options={"max_order": 5})
    assert sol.ys.dtype == torch.float32
    assert (sol.ys[-1] - math.exp(-math.sin(3))).abs().max() < 1e-5
    back = odekit.solve(decay, torch.full((1,), math.exp(-math.sin(3)), dtype=F64),
                        torch.tensor([3.0, 0.0], dtype=F64), method="implicit_adams", step_size=0.05)
    assert abs(back.ys[-1].item() - 1) < 1e-6


def test_options():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InvalidInputError, match="max_order"):
        odekit.solve(generic, Y0, t, method="implicit_adams", step_size=0.1, options={"max_order": 13})
    with pytest.raises(InvalidInputError, match="max_iters"):
        odekit.solve(generic, Y0, t, method="implicit_adams", step_size=0.1, options={"max_iters": 0})
    with pytest.warns(UserWarning, match="reduces to rk4"):
        low = odekit.solve(generic, Y0, t, method="explicit_adams", step_size=0.1, options={"max_order": 3})
    rk4 = odekit.solve(generic, Y0, t, method="rk4", step_size=0.1)
    torch.testing.assert_close(low.ys, rk4.ys, rtol=1e-14, atol=1e-14)
    assert low.stats.nfe == rk4.stats.nfe
    implicit = odekit.solve(generic, Y0, t, method="implicit_adams", step_size=0.1)
    fixed = odekit.solve(generic, Y0, t, method="fixed_adams", step_size=0.1)
    assert torch.equal(implicit.ys, fixed.ys)


@pytest.mark.parametrize("name,max_order,h", [
    ("explicit_adams", 12, 0.1),  # unstable at this step (Bashforth 11), identically in both libraries
    ("explicit_adams", 5, 0.1),
    ("implicit_adams", 12, 0.1),
    ("implicit_adams", 4, 0.05),
])
def test_matches_torchdiffeq_on_a_uniform_grid(name, max_order, h):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    def f(t, y):
        return -y * torch.cos(t)
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 2.5, 5.0], dtype=F64)
    options = {"step_size": h, "max_order": max_order}
    ours = odekit.solve(f, y0, t, method=name, options=options)
    theirs = torchdiffeq.odeint(f, y0, t, method=name, options=options)
    torch.testing.assert_close(ours.ys, theirs, rtol=1e-9, atol=1e-12)
