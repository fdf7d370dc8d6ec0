"""Each experiment end to end in its smoke profile, plus the pieces they are made of."""

import json

import pytest
import torch

from odekit.data.landscapes import LANDSCAPES
from odekit.experiments import execute, get


@pytest.mark.parametrize("name", sorted(LANDSCAPES))
def test_landscape_gradients_match_autograd_and_vanish_at_the_minimiser(name):
    land = LANDSCAPES[name]
    points = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(land.value(points).sum(), points)
    torch.testing.assert_close(land.gradient(points.detach()), expected)
    minimiser = torch.tensor(land.minimiser, dtype=torch.float64)
    assert land.value(minimiser).abs() < 1e-12 and land.gradient(minimiser).abs().max() < 1e-12


def test_hb_optim_demo_smoke(tmp_path):
    exp = get("hb_optim_demo")
    run_dir = execute(exp, exp.config("smoke"), tmp_path, tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = (run_dir / "tables" / "hb_optim_demo.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 2 functions × 2 ODEs
    # Gradient flow from (0, 0) on Rosenbrock at t = 1 with Δt = 0.001: the distance is known from an
    # independent fine solve (scipy, below) and every run must land on it.
    from scipy.integrate import solve_ivp

    land = LANDSCAPES["rosenbrock"]
    sol = solve_ivp(lambda t, x: -land.gradient(torch.from_numpy(x)).numpy(), (0, 1), [0.0, 0.0], method="DOP853",
                    rtol=1e-12, atol=1e-12)
    expected = float(((torch.from_numpy(sol.y[:, -1]) - torch.tensor(land.minimiser, dtype=torch.float64)).norm()))
    got = metrics["rosenbrock: distance to minimiser at t=1, gradient flow (3.8)"]
    assert got == pytest.approx(expected, abs=1e-4)
    assert (run_dir / "figures" / "hb_optim_demo.png").stat().st_size > 10_000
