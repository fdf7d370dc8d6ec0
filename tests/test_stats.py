"""Counters: read from Solution.stats, or through record_stats() around torchdiffeq-style calls."""

import torch

import odekit


class Counted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2).double()
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return torch.tanh(self.lin(y))


def test_nfe_counts_every_call_of_f():
    f = Counted()
    y0 = torch.randn(4, 2, dtype=torch.float64)
    sol = odekit.solve(f, y0, torch.linspace(0, 3, 4, dtype=torch.float64), rtol=1e-6, atol=1e-8)
    assert sol.stats.nfe == f.calls
    # dopri5 is FSAL: 6 new evaluations per step, plus f(t0) and one for the initial step size.
    assert sol.stats.nfe == 6 * sol.stats.steps + 2


def test_record_stats_around_odeint_and_backward():
    f = Counted()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with odekit.record_stats() as rec:
        a = odekit.odeint(f, y0, t, rtol=1e-6, atol=1e-8)
        b = odekit.odeint_adjoint(f, y0, t, rtol=1e-6, atol=1e-8)
    forward_calls = f.calls
    assert len(rec.solves) == 2 and rec.nfe == forward_calls
    assert rec.nfe_backward == 0
    (a[-1].sum() + b[-1].sum()).backward()
    total = rec.total()
    backprop, adjoint = rec.solves
    assert backprop.nfe_backward == backprop.nfe
    assert adjoint.nfe_backward == f.calls - forward_calls  # each adjoint evaluation calls f once
    assert total.nfe_backward == backprop.nfe_backward + adjoint.nfe_backward
    assert total.steps_accepted == backprop.steps_accepted + adjoint.steps_accepted


def test_recorders_nest_and_stop_recording_outside_their_block():
    f = Counted()
    y0 = torch.randn(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with odekit.record_stats() as outer:
        odekit.odeint(f, y0, t)
        with odekit.record_stats() as inner:
            odekit.odeint(f, y0, t)
    odekit.odeint(f, y0, t)
    assert len(outer.solves) == 2 and len(inner.solves) == 1
    assert outer.nfe == 2 * inner.nfe
