"""odekit as a drop-in for torchdiffeq: same results, same layout, comparable NFE."""

import pytest
import torch

torchdiffeq = pytest.importorskip("torchdiffeq")

from problems import lotka_volterra, oscillator, scipy_reference, van_der_pol  # noqa: E402

import odekit  # noqa: E402


class Counted(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f, self.calls = f, 0

    def forward(self, t, y):
        self.calls += 1
        return self.f(t, y)


def mlp_problem():
    # Seeded: built at collection time, it must not depend on what other test modules drew before.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
        y0 = torch.randn(8, 2, dtype=torch.float64)
    return (lambda t, y: net(y)), y0, 3.0


PROBLEMS = {
    "van_der_pol": (van_der_pol, torch.tensor([2.0, 0.0], dtype=torch.float64), 10.0),
    "lotka_volterra": (lotka_volterra, torch.tensor([1.0, 1.0], dtype=torch.float64), 10.0),
    "oscillator": (oscillator, torch.tensor([1.0, 0.0], dtype=torch.float64), 10.0),
    "mlp": mlp_problem(),
}


CASES = [(m, r) for m in ("dopri5", "dopri8") for r in (1e-3, 1e-6, 1e-9)] + [
    (m, r) for m in ("bosh3",) for r in (1e-3, 1e-6)
]


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method,rtol", CASES)
def test_nfe_within_15_percent_and_at_least_as_accurate(problem, rtol, method):
    f, y0, t_end = PROBLEMS[problem]
    t = torch.linspace(0, t_end, 6, dtype=torch.float64)
    theirs = Counted(f)
    with torch.no_grad():
        expected = torchdiffeq.odeint(theirs, y0, t, rtol=rtol, atol=rtol / 100, method=method)
        with odekit.record_stats() as rec:
            got = odekit.odeint(f, y0, t, rtol=rtol, atol=rtol / 100, method=method)
        reference = scipy_reference(f, y0, t)
    assert abs(rec.nfe - theirs.calls) <= 0.15 * theirs.calls
    # Same steps, but dense output differs (odekit derives its interpolants from the order
    # conditions; torchdiffeq's bosh3 interpolant is much less accurate), so compare errors.
    ours_err = (got - reference).abs().max()
    their_err = (expected - reference).abs().max()
    assert ours_err <= 1.5 * their_err + 1e-12


def test_tuple_state_layout_matches():
    x0, v0 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    t = torch.linspace(0, 2, 4, dtype=torch.float64)

    def f(t, s):
        return s[1], -s[0] - 0.1 * s[1]

    ours = odekit.odeint(f, (x0, v0), t)
    theirs = torchdiffeq.odeint(f, (x0, v0), t)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # same steps, different interpolants


def test_fixed_grid_matches_exactly():
    f, y0, _ = PROBLEMS["van_der_pol"]
    t = torch.linspace(0, 2, 7, dtype=torch.float64)
    for method in ("euler", "midpoint", "rk4"):
        ours = odekit.odeint(f, y0, t, method=method, options={"step_size": 0.05})
        theirs = torchdiffeq.odeint(f, y0, t, method=method, options={"step_size": 0.05})
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_adjoint_gradients_match_torchdiffeq():
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y)

    field = Field()
    y0 = torch.randn(8, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    grads = []
    for odeint_adjoint in (odekit.odeint_adjoint, torchdiffeq.odeint_adjoint):
        field.zero_grad()
        odeint_adjoint(field, y0, t, rtol=1e-9, atol=1e-10).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in field.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
