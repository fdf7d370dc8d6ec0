"""Per-sample stepping: each sample's steps and values equal a solve of that sample alone."""

from __future__ import annotations

import math

import pytest
import torch

import odekit
from odekit.solve.callbacks import StepCallbacks
from odekit.solve.errors import InvalidInputError, NonFiniteError

MU = 10.0


def van_der_pol(t, y):
    return torch.stack([y[..., 1], MU * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


@pytest.fixture(scope="module")
def phases() -> torch.Tensor:
    """Eight Van der Pol (μ = 10) states spread along the limit cycle."""
    cycle = odekit.solve(van_der_pol, torch.tensor([2.0, 0.0], dtype=torch.float64),
                         torch.linspace(0.0, 19.0, 9, dtype=torch.float64)[1:], rtol=1e-8, atol=1e-10)
    return cycle.ys.clone()


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_each_sample_takes_the_steps_of_its_own_solve(phases, method):
    t = torch.linspace(0.0, 6.0, 4, dtype=torch.float64)
    batch = odekit.solve(van_der_pol, phases, t, method=method, rtol=1e-7, atol=1e-9, per_sample=True)
    assert batch.ys.shape == (4, 8, 2)
    for b in range(8):
        alone = odekit.solve(van_der_pol, phases[b], t, method=method, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(batch.ys[:, b], alone.ys, rtol=0, atol=1e-10)
        assert int(batch.stats.per_sample["steps_accepted"][b]) == alone.stats.steps_accepted
        assert int(batch.stats.per_sample["steps_rejected"][b]) == alone.stats.steps_rejected
        assert int(batch.stats.per_sample["nfe"][b]) == alone.stats.nfe
    # Batched calls: as many as the hardest sample needs, fewer than a batch-coupled solve (the
    # ratio on the 16-oscillator case is in benchmarks/per_sample.py).
    coupled = odekit.solve(van_der_pol, phases, t, method=method, rtol=1e-7, atol=1e-9)
    assert batch.stats.nfe == int(batch.stats.per_sample["nfe"].max())
    assert batch.stats.nfe < coupled.stats.nfe


def test_per_sample_output_times_and_pid_options(phases):
    t = torch.stack([torch.linspace(0.0, 1.0 + b, 5, dtype=torch.float64) for b in range(8)])
    options = {"pcoeff": 0.2, "icoeff": 0.4, "dcoeff": 0.1, "safety": 0.8}
    batch = odekit.solve(van_der_pol, phases, t, rtol=1e-6, atol=1e-8, options=options, per_sample=True)
    for b in range(8):
        alone = odekit.solve(van_der_pol, phases[b], t[b], rtol=1e-6, atol=1e-8, options=options)
        torch.testing.assert_close(batch.ys[:, b], alone.ys, rtol=0, atol=1e-10)
        assert int(batch.stats.per_sample["steps_accepted"][b]) == alone.stats.steps_accepted


def test_f_gets_one_time_per_sample(phases):
    seen = []

    def f(t, y):
        seen.append(t.shape)
        return van_der_pol(t, y)

    odekit.solve(f, phases, torch.tensor([0.0, 1.0], dtype=torch.float64), per_sample=True)
    assert set(seen) == {torch.Size([8])}


def test_backprop_through_per_sample_steps_matches_single_solves(phases):
    weight = torch.tensor([[0.9, 0.1], [-0.2, 1.1]], dtype=torch.float64, requires_grad=True)

    def f(t, y):
        return van_der_pol(t, y @ weight)

    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64)
    batch = odekit.solve(f, phases, t, rtol=1e-8, atol=1e-10, per_sample=True)
    (grad_batch,) = torch.autograd.grad(batch.ys[-1].pow(2).sum(), weight)
    grad_alone = sum(torch.autograd.grad(odekit.solve(f, phases[b], t, rtol=1e-8, atol=1e-10).ys[-1].pow(2).sum(),
                                         weight)[0] for b in range(8))
    torch.testing.assert_close(grad_batch, grad_alone, rtol=1e-8, atol=1e-10)


def test_a_failing_sample_does_not_stop_the_others(phases):
    def f(t, y):
        out = van_der_pol(t, y)
        poisoned = torch.zeros_like(out, dtype=torch.bool)
        poisoned[3] = t[3] > 0.5
        return torch.where(poisoned, torch.full_like(out, math.nan), out)

    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    sol = odekit.solve(f, phases, t, per_sample=True, throw=False)
    assert sol.status == "non_finite" and "sample 3" in sol.message
    assert torch.isfinite(sol.ys[1, 3]).all() and torch.isnan(sol.ys[2, 3]).all()
    healthy = odekit.solve(van_der_pol, phases[[0, 1, 2, 4]], t, per_sample=True)
    torch.testing.assert_close(sol.ys[:, [0, 1, 2, 4]], healthy.ys, rtol=0, atol=0)
    with pytest.raises(NonFiniteError, match="sample 3"):
        odekit.solve(f, phases, t, per_sample=True)


@pytest.mark.parametrize("kwargs,match", [
    ({"event_fn": lambda t, y: y[..., 0]}, "event_fn"),
    ({"callbacks": StepCallbacks(step=lambda t, y, h: None)}, "callbacks"),
    ({"dense": True}, "dense"),
])
def test_unsupported_per_sample_settings_are_refused(phases, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        odekit.solve(van_der_pol, phases, torch.tensor([0.0, 1.0], dtype=torch.float64), per_sample=True, **kwargs)


def test_bad_per_sample_times_are_refused(phases):
    with pytest.raises(InvalidInputError, match=r"shape \(T,\) or \(batch=8, T\)"):
        odekit.solve(van_der_pol, phases, torch.zeros(3, 2, dtype=torch.float64), per_sample=True)
    times = torch.stack([torch.linspace(0.0, 1.0, 3, dtype=torch.float64)] * 8)
    times[5, 2] = 0.2
    with pytest.raises(InvalidInputError, match="sample 5"):
        odekit.solve(van_der_pol, phases, times, per_sample=True)
    with pytest.raises(InvalidInputError, match="the same in every tensor"):
        odekit.solve(lambda t, y: y, (phases, phases[:3]), torch.tensor([0.0, 1.0], dtype=torch.float64),
                     per_sample=True)
    with pytest.raises(InvalidInputError, match=r"shapes \[\(8, 2\)\]"):
        odekit.solve(lambda t, y: y[:, :1], phases, torch.tensor([0.0, 1.0], dtype=torch.float64), per_sample=True)


def test_tuple_states_step_per_sample_like_their_own_solves(phases):
    """A (position, velocity) pair per sample: each sample's steps are those of its own tuple solve,
    whose error norm is the largest RMS of a component."""

    def f(t, y):
        x, v = y
        return v, MU * (1 - x**2) * v - x

    x0, v0 = phases[:, :1].clone() * 1.5, phases[:, 1:].clone()
    t = torch.linspace(0.0, 3.0, 5, dtype=torch.float64)
    batch = odekit.solve(f, (x0, v0), t, rtol=1e-7, atol=1e-9, per_sample=True)
    assert batch.ys[0].shape == (5, 8, 1) and batch.ys[1].shape == (5, 8, 1)
    for b in range(8):
        alone = odekit.solve(f, (x0[b], v0[b]), t, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(batch.ys[0][:, b], alone.ys[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(batch.ys[1][:, b], alone.ys[1], rtol=0, atol=1e-10)
        assert int(batch.stats.per_sample["steps_accepted"][b]) == alone.stats.steps_accepted
        assert int(batch.stats.per_sample["steps_rejected"][b]) == alone.stats.steps_rejected


def _field_and_params():
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(2, 12), torch.nn.Tanh(), torch.nn.Linear(12, 2)).double()

    def f(t, y):  # t has shape (batch,)
        return net(y) * torch.cos(t)[:, None]

    return f, tuple(net.parameters())


@pytest.mark.parametrize("gradient", ["checkpoint", "adjoint"])
def test_per_sample_checkpoint_and_adjoint_gradients(phases, gradient):
    """checkpoint re-takes the steps: backprop's gradient exactly; the per-sample adjoint solves each
    sample's adjoint backwards: backprop's gradient to the solver's tolerance."""
    f, params = _field_and_params()
    y0 = phases * 0.3
    t = torch.stack([torch.linspace(0.0, 1.0 + 0.25 * b, 4, dtype=torch.float64) for b in range(8)])

    def gradients(method: str):
        y = y0.clone().requires_grad_()
        sol = odekit.solve(f, y, t, rtol=1e-10, atol=1e-12, per_sample=True, gradient=method, adjoint_params=params)
        loss = (sol.ys[1:] ** 2).sum() + sol.ys[-1, :, 0].sum()
        return torch.autograd.grad(loss, (y, *params)), sol.stats

    reference, _ = gradients("backprop")
    got, stats = gradients(gradient)
    tolerance = {"checkpoint": dict(rtol=0, atol=0), "adjoint": dict(rtol=1e-6, atol=1e-7)}[gradient]
    for a, b in zip(got, reference):
        torch.testing.assert_close(a, b, **tolerance)
    if gradient == "adjoint":
        assert stats.nfe_backward > 0 and int(stats.per_sample["steps_backward"].min()) > 0


def test_the_per_sample_adjoint_of_a_tuple_state_with_args():
    """dx/dt = v, dv/dt = −k x (k through args): the adjoint's gradient to k against the closed form
    of x(T) = x0 cos(√k T) + v0/√k sin(√k T)."""
    k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)

    def f(t, y, k):
        x, v = y
        return v, -k * x

    x0 = torch.tensor([[1.0], [0.5], [-0.3]], dtype=torch.float64)
    v0 = torch.tensor([[0.0], [1.0], [0.2]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 0.5]], dtype=torch.float64)
    sol = odekit.solve(f, (x0, v0), t, args=k, rtol=1e-10, atol=1e-12, per_sample=True, gradient="adjoint")
    (grad,) = torch.autograd.grad(sol.ys[0][-1].sum(), k)

    def closed_form(k):
        w, T = torch.sqrt(k), t[:, -1:]
        return (x0 * torch.cos(w * T) + v0 / w * torch.sin(w * T)).sum()

    (exact,) = torch.autograd.grad(closed_form(k), k)
    torch.testing.assert_close(sol.ys[0][-1].sum(), closed_form(k).detach(), rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(grad, exact, rtol=1e-7, atol=1e-9)
