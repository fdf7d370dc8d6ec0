"""Empirical convergence orders: log–log slopes of error against step size."""

import numpy as np
import pytest
import torch
from problems import scipy_reference

import odekit
from odekit.solve import TABLEAUS
from odekit.solve.runge_kutta import RungeKutta

# Step sizes per order: in the asymptotic regime, yet with errors far above float64 round-off.
STEPS = {1: [0.02, 0.01, 0.005], 2: [0.04, 0.02, 0.01], 3: [0.1, 0.05, 0.025], 4: [0.2, 0.1, 0.05],
         5: [0.1, 0.05, 0.025], 8: [0.3, 0.2, 0.15]}
Y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
T_END = 3.0


def generic(t, y):
    """A non-autonomous nonlinear field without symmetries that could cancel error terms."""
    return torch.stack([torch.sin(t) * y[..., 1] - y[..., 0] ** 2, torch.cos(y[..., 0]) + 0.5 * t], dim=-1)


def slope(hs, errors):
    return np.polyfit(np.log(hs), np.log(errors), 1)[0]


@pytest.fixture(scope="module")
def reference():
    return scipy_reference(generic, Y0, torch.tensor([0.0, T_END], dtype=torch.float64))[-1]


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_global_order_of_every_tableau(name, reference):
    tableau = TABLEAUS[name]
    hs = STEPS[tableau.order]
    t = torch.tensor([0.0, T_END], dtype=torch.float64)
    errors = [
        (odekit.solve(generic, Y0, t, method=name, step_size=h).ys[-1] - reference).norm().item() for h in hs
    ]
    # At least the design order; a little more is common (tsit5's tiny leading error term).
    assert tableau.order - 0.3 <= slope(hs, errors) <= tableau.order + 1


@pytest.mark.parametrize("name", sorted(n for n, t in TABLEAUS.items() if t.adaptive))
def test_embedded_error_estimate_has_the_order_of_the_lower_method(name):
    """The local error estimate h·Σ(b−b̂)k scales as h^(p̂+1), with p̂ = order − 1 of the pair."""
    solver = RungeKutta(TABLEAUS[name])
    y0 = torch.tensor([1.5, 0.3], dtype=torch.float64)

    def field(t, y, side=0):
        return generic(torch.tensor(t, dtype=torch.float64), y)

    hs = [0.1, 0.05, 0.025]
    estimates = []
    for h in hs:
        _, K = solver.step(field, 0.0, y0, h, field(0.0, y0))
        estimates.append(h * solver.error(K).norm().item())
    assert slope(hs, estimates) == pytest.approx(TABLEAUS[name].order, abs=0.5)


@pytest.mark.parametrize("name,min_order", [("bosh3", 3), ("dopri5", 4), ("tsit5", 4), ("dopri8", 4)])
def test_dense_output_order(name, min_order):
    """Interpolated values between steps converge at the interpolant's order (global)."""
    t = torch.tensor([0.0, 0.37, 1.11, 2.63], dtype=torch.float64)  # never on a grid point
    reference = scipy_reference(generic, Y0, t)
    hs = [0.2, 0.1, 0.05]
    errors = [
        (odekit.solve(generic, Y0, t, method=name, step_size=h).ys - reference).abs().max().item() for h in hs
    ]
    assert slope(hs, errors) >= min_order - 0.3
