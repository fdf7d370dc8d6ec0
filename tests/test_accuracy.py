"""Accuracy of every method against exact solutions and scipy's DOP853."""

import pytest
import torch
from problems import decay, lotka_volterra, oscillator, oscillator_exact, scipy_reference, van_der_pol

import odekit
from odekit.solve import TABLEAUS

# Explicit Runge–Kutta methods; the proximal implicit ones are tested in test_proximal.py.
ADAPTIVE = sorted(name for name, tableau in TABLEAUS.items() if tableau.adaptive)
FIXED = sorted(name for name, tableau in TABLEAUS.items() if not tableau.adaptive)
# Tolerances that keep low-order methods affordable, and the error each method must then reach.
# fehlberg2 embeds a first-order pair with a tiny error constant: its estimate is optimistic.
RTOL = {"adaptive_heun": 1e-6, "fehlberg2": 1e-8, "bosh3": 1e-8}
BOUND = {"adaptive_heun": 2e-5, "fehlberg2": 3e-5, "bosh3": 1e-6, "dopri5": 1e-7, "tsit5": 1e-7, "dopri8": 1e-5}
# Global errors of h = 0.01 over [0, 10]: about 0.5·h·T, h²·T/6, and h⁴·T/120 (times |y| ≈ 1.1).
# heun2 and heun3 have the error constants of midpoint's order 2 and h³·T/… of order 3.
FIXED_BOUND = {"euler": 0.07, "midpoint": 3e-4, "heun2": 3e-4, "heun3": 1e-6, "rk4": 2e-9}


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_methods_match_exact_oscillator(method):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 10, 41, dtype=torch.float64)
    rtol = RTOL.get(method, 1e-9)
    sol = odekit.solve(oscillator, y0, t, method=method, rtol=rtol, atol=rtol / 100)
    assert sol.ok
    assert (sol.ys - oscillator_exact(t, y0)).abs().max() < BOUND[method]
    assert sol.stats.nfe > 0 and sol.stats.steps_accepted > 0


@pytest.mark.parametrize("method", FIXED)
def test_fixed_methods_match_exact_oscillator(method):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 10, 11, dtype=torch.float64)
    sol = odekit.solve(oscillator, y0, t, method=method, step_size=0.01)
    assert (sol.ys - oscillator_exact(t, y0)).abs().max() < FIXED_BOUND[method]
    stages = TABLEAUS[method].stages
    assert sol.stats.nfe == stages * 1000


@pytest.mark.parametrize("method", ADAPTIVE)
def test_non_autonomous_and_decreasing_time(method):
    y0 = torch.tensor([2.0], dtype=torch.float64)
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    rtol = RTOL.get(method, 1e-10)
    ys = odekit.odeint(decay, y0, t, rtol=rtol, atol=rtol / 100, method=method)
    exact = 2.0 * torch.exp(-t**2)[:, None]
    assert (ys - exact).abs().max() < BOUND[method]
    back = odekit.odeint(decay, ys[-1], t.flip(0), rtol=rtol, atol=rtol / 100, method=method)
    assert (back - exact.flip(0)).abs().max() < BOUND[method]


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("problem", [van_der_pol, lotka_volterra])
def test_against_scipy_dop853(method, problem):
    y0 = torch.tensor([2.0, 1.0], dtype=torch.float64)
    t = torch.linspace(0, 8, 17, dtype=torch.float64)
    reference = scipy_reference(problem, y0, t)
    rtol = RTOL.get(method, 1e-10)
    ys = odekit.odeint(problem, y0, t, rtol=rtol, atol=rtol / 100, method=method)
    rel = ((ys - reference).abs() / (reference.abs() + 1e-3)).max()
    assert rel < 100 * BOUND[method]


def test_tuple_state_and_batch_shapes():
    x0 = torch.randn(3, 4, dtype=torch.float64)
    v0 = torch.randn(3, 4, dtype=torch.float64)
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    xs, vs = odekit.odeint(lambda t, s: (s[1], -s[0]), (x0, v0), t, rtol=1e-10, atol=1e-12)
    assert xs.shape == (7, 3, 4) and vs.shape == (7, 3, 4)
    c, s = torch.cos(t)[:, None, None], torch.sin(t)[:, None, None]
    assert (xs - (c * x0 + s * v0)).abs().max() < 1e-8
    assert (vs - (-s * x0 + c * v0)).abs().max() < 1e-8


def test_float32_state():
    y0 = torch.tensor([1.0, 0.0])
    t = torch.linspace(0, 5, 6)
    ys = odekit.odeint(oscillator, y0, t, rtol=1e-6, atol=1e-7)
    assert ys.dtype == torch.float32
    assert (ys - oscillator_exact(t.double(), y0.double()).float()).abs().max() < 1e-4


def test_dense_output_at_many_times_is_accurate_and_cheap():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    few = odekit.solve(oscillator, y0, torch.tensor([0.0, 10.0], dtype=torch.float64), rtol=1e-8, atol=1e-10)
    t = torch.linspace(0, 10, 1001, dtype=torch.float64)
    many = odekit.solve(oscillator, y0, t, rtol=1e-8, atol=1e-10)
    # Output times do not change the steps: the same NFE, and the interpolant is accurate.
    assert many.stats.nfe == few.stats.nfe
    assert (many.ys - oscillator_exact(t, y0)).abs().max() < 1e-6


def test_single_output_time_returns_initial_state():
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    sol = odekit.solve(oscillator, y0, torch.tensor([0.5], dtype=torch.float64))
    assert sol.ys.shape == (1, 2) and torch.equal(sol.ys[0], y0) and sol.stats.nfe == 0


def test_pi_controller_coefficients_change_steps_not_accuracy():
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 10, 5, dtype=torch.float64)
    reference = scipy_reference(van_der_pol, y0, t)
    sol = odekit.solve(van_der_pol, y0, t, rtol=1e-8, atol=1e-10, options={"pcoeff": 0.3, "icoeff": 0.4})
    plain = odekit.solve(van_der_pol, y0, t, rtol=1e-8, atol=1e-10)
    assert sol.stats.nfe != plain.stats.nfe
    assert (sol.ys - reference).abs().max() < 1e-6


def test_compiled_vector_field_and_compiled_solve():
    """torch.compile'd fields work as-is, and a compiled function that calls odeint gives the same answer."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    y0 = torch.randn(4, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    expected = odekit.odeint(lambda t, y: net(y), y0, t, rtol=1e-8, atol=1e-10)
    compiled_field = torch.compile(lambda t, y: net(y), backend="eager")
    torch.testing.assert_close(odekit.odeint(compiled_field, y0, t, rtol=1e-8, atol=1e-10), expected)
    compiled_solve = torch.compile(lambda y: odekit.odeint(lambda t, y: net(y), y, t, rtol=1e-8, atol=1e-10),
                                   backend="eager")
    torch.testing.assert_close(compiled_solve(y0), expected)
