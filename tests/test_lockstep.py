"""Per-sample solves of the host-loop methods (proximal, stiff, implicit RK, fixed grids) in lockstep:
each sample takes the steps, inner iterations and values of its own solve, and f sees the batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import odekit
from odekit.solve.errors import InvalidInputError, NonFiniteError
from odekit.solve.tensor_loop import CompileWarning

DTYPE = torch.float64
BATCH = 5
RATES = torch.logspace(0.0, 3.0, BATCH, dtype=DTYPE)  # stiffness 1 … 1000 across the batch


class Relaxation(nn.Module):
    """``dy/dt = −e^θ λ (y − cos t)``: per-sample rates ``λ`` come as ``args`` (a batch, or one
    sample's rate for a solve alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(0.1, dtype=DTYPE))
        self.times_seen: list[tuple[int, ...]] = []

    def forward(self, t, y, rate):
        self.times_seen.append(tuple(t.shape))
        return -self.theta.exp() * rate[..., None] * (y - torch.cos(t)[..., None])


def y0() -> torch.Tensor:
    return torch.stack([torch.linspace(-1.0, 2.0, BATCH, dtype=DTYPE), torch.ones(BATCH, dtype=DTYPE)], dim=1)


CASES = {
    "prox_bdf adaptive, Fletcher–Reeves": {"method": "prox_bdf", "options": {"inner": "fr", "inner_step": 0.3}},
    "prox_bdf3 fixed step, L-BFGS": {"method": "prox_bdf3", "step_size": 0.05},
    "prox_ms3 fixed step, Newton–Krylov": {"method": "prox_ms3", "step_size": 0.1,
                                           "options": {"inner": "newton_krylov"}},
    "prox_cn fixed step, Anderson": {"method": "prox_cn", "step_size": 0.05, "options": {"inner": "anderson"}},
    "ndf": {"method": "ndf"},
    "radauIIA5": {"method": "radauIIA5"},
    "auto": {"method": "auto"},
    "rk4 fixed step": {"method": "rk4", "step_size": 0.001},
}


@pytest.mark.parametrize("case", CASES)
def test_each_sample_takes_the_steps_of_its_own_solve(case):
    settings = dict(rtol=1e-6, atol=1e-8, **CASES[case])
    t = torch.stack([torch.linspace(0.0, 1.0 + 0.25 * b, 4, dtype=DTYPE) for b in range(BATCH)])
    field = Relaxation()
    batch = odekit.solve(field, y0(), t, args=RATES, per_sample=True, **settings)
    assert batch.ok and batch.ys.shape == (4, BATCH, 2)
    assert set(field.times_seen) == {(BATCH,)}  # f always gets the whole batch
    per_sample = batch.stats.per_sample
    for b in range(BATCH):
        alone = odekit.solve(Relaxation(), y0()[b], t[b], args=RATES[b], **settings)
        torch.testing.assert_close(batch.ys[:, b], alone.ys, rtol=0, atol=1e-12)
        assert int(per_sample["nfe"][b]) == alone.stats.nfe
        assert int(per_sample["steps_accepted"][b]) == alone.stats.steps_accepted
        assert int(per_sample["steps_rejected"][b]) == alone.stats.steps_rejected
        for key, value in alone.stats.extra.items():  # inner iterations, Jacobians, LU factorisations
            assert int(per_sample[key][b]) == value, key
    # every sample asks for f once per batched call until it is done
    assert batch.stats.nfe == int(per_sample["nfe"].max())


def test_per_sample_steps_cost_fewer_inner_iterations_than_a_coupled_solve():
    """Coupled, the stiffest sample sets every sample's step; per sample, the mild ones take long steps."""
    t = torch.linspace(0.0, 2.0, 3, dtype=DTYPE)
    settings = {"method": "prox_bdf", "rtol": 1e-5, "atol": 1e-7, "options": {"inner": "fr", "inner_step": 0.3}}
    batch = odekit.solve(Relaxation(), y0(), t, args=RATES, per_sample=True, **settings)
    coupled = odekit.solve(Relaxation(), y0(), t, args=RATES, **settings)
    assert batch.stats.steps_accepted < BATCH * coupled.stats.steps_accepted
    assert int(batch.stats.per_sample["steps_accepted"][0]) < coupled.stats.steps_accepted
    torch.testing.assert_close(batch.ys, coupled.ys, rtol=0, atol=1e-3)  # both within the tolerance


@pytest.mark.parametrize("gradient,atol", [("backprop", 1e-12), ("implicit", 1e-8), ("adjoint", 1e-12)])
def test_gradients_equal_the_sum_of_the_samples_own_gradients(gradient, atol):
    t = torch.linspace(0.0, 1.0, 3, dtype=DTYPE)
    options = {"inner": "newton_krylov", "krylov_rtol": 1e-8}
    settings = {"method": "prox_bdf", "rtol": 1e-7, "atol": 1e-9, "gradient": gradient, "options": options}
    if gradient == "adjoint":  # backwards, the stiff samples' decaying modes would grow: read y(t) forward
        settings["adjoint_options"] = {**options, "trajectory": "interpolate"}
    field = Relaxation()
    start = y0().requires_grad_(True)
    with odekit.record_stats() as recorded:
        sol = odekit.solve(field, start, t, args=RATES, per_sample=True, **settings)
    sol.ys[-1].square().sum().backward()
    assert len(recorded.solves) == 1 and recorded.nfe_backward > 0
    assert int(sol.stats.per_sample["nfe_backward"].min()) > 0
    for b in range(BATCH):
        alone_field = Relaxation()
        alone_start = y0()[b].requires_grad_(True)
        alone = odekit.solve(alone_field, alone_start, t, args=RATES[b], **settings)
        alone.ys[-1].square().sum().backward()
        torch.testing.assert_close(start.grad[b], alone_start.grad, rtol=0, atol=atol)
        if b == 0:
            theta_grad = alone_field.theta.grad.clone()
        else:
            theta_grad += alone_field.theta.grad
    torch.testing.assert_close(field.theta.grad, theta_grad, rtol=1e-10, atol=atol)


def test_gradients_reach_per_sample_output_times():
    times = torch.stack([torch.linspace(0.0, 0.5 + 0.1 * b, 3, dtype=DTYPE) for b in range(BATCH)])
    times.requires_grad_(True)
    sol = odekit.solve(Relaxation(), y0(), times, args=RATES, method="ndf", rtol=1e-8, atol=1e-10, per_sample=True)
    sol.ys[-1, :, 0].sum().backward()
    for b in (0, BATCH - 1):
        # d y(t_end)/d t_end = f(t_end, y(t_end))
        slope = Relaxation()(times[b, -1].detach(), sol.ys[-1, b].detach(), RATES[b])
        torch.testing.assert_close(times.grad[b, -1], slope[0], rtol=1e-10, atol=1e-12)


def test_a_failing_sample_is_reported_and_the_others_finish():
    def f(t, y, rate):
        out = Relaxation.forward(relaxation, t, y, rate)
        return torch.where((t > 0.5)[:, None] & (torch.arange(BATCH) == 3)[:, None], math.nan, out)

    relaxation = Relaxation()
    t = torch.tensor([0.0, 0.25, 1.0], dtype=DTYPE)
    settings = {"method": "prox_bdf2", "step_size": 0.05, "args": RATES, "per_sample": True}
    sol = odekit.solve(f, y0(), t, throw=False, **settings)
    assert sol.status == "non_finite" and sol.message.startswith("1 of 5 samples failed; sample 3:")
    assert torch.isfinite(sol.ys[1, 3]).all() and torch.isnan(sol.ys[2, 3]).all()
    healthy = odekit.solve(Relaxation(), y0(), t, **settings)
    torch.testing.assert_close(sol.ys[:, [0, 1, 2, 4]], healthy.ys[:, [0, 1, 2, 4]], rtol=0, atol=0)
    with pytest.raises(NonFiniteError, match="sample 3 of the batch"):
        odekit.solve(f, y0(), t, **settings)


def test_tuple_states_run_in_lockstep():
    def oscillator(t, state, rate):
        x, v = state
        return v, -rate[..., None] * x - v

    start = (y0(), torch.zeros(BATCH, 2, dtype=DTYPE))
    t = torch.linspace(0.0, 1.0, 3, dtype=DTYPE)
    sol = odekit.solve(oscillator, start, t, args=RATES, method="radauIIA5", rtol=1e-7, atol=1e-9, per_sample=True)
    for b in (0, 4):
        alone = odekit.solve(oscillator, (start[0][b], start[1][b]), t, args=RATES[b], method="radauIIA5",
                             rtol=1e-7, atol=1e-9)
        for got, want in zip(sol.ys, alone.ys):
            torch.testing.assert_close(got[:, b], want, rtol=0, atol=1e-12)


def test_settings_lockstep_does_not_take_are_refused_and_compile_warns():
    t = torch.tensor([0.0, 1.0], dtype=DTYPE)
    with pytest.raises(InvalidInputError, match="does not take dense"):
        odekit.solve(Relaxation(), y0(), t, args=RATES, method="ndf", per_sample=True, dense=True)
    with pytest.raises(InvalidInputError, match=r"shapes \[\(5, 2\)\]"):
        odekit.solve(lambda t, y: y[:, :1], y0(), t, method="ndf", per_sample=True)
    with pytest.warns(CompileWarning, match="lockstep"):
        sol = odekit.solve(Relaxation(), y0(), t, args=RATES, method="ndf", per_sample=True, compile=True)
    assert sol.ok


def test_forward_mode_products_and_autograd_jacobians_evaluate_each_sample_at_once():
    """Forward-AD levels and functorch transforms are global: inside them a sample does not wait for
    the others (its point is evaluated on a batch of its copies), and results still equal its own solve."""
    t = torch.linspace(0.0, 0.5, 3, dtype=DTYPE)
    wide = torch.ones(BATCH, 20, dtype=DTYPE)  # 20 components: ndf's "auto" Jacobian is jacfwd
    cases = [({"method": "prox_be", "step_size": 0.1,
               "options": {"inner": "newton_krylov", "jvp": "forward_ad"}}, y0()),
             ({"method": "ndf", "options": {"jacobian": "autograd"}}, wide)]
    for settings, start in cases:
        sol = odekit.solve(Relaxation(), start, t, args=RATES, per_sample=True, **settings)
        for b in (0, BATCH - 1):
            alone = odekit.solve(Relaxation(), start[b], t, args=RATES[b], **settings)
            torch.testing.assert_close(sol.ys[:, b], alone.ys, rtol=0, atol=1e-12)
            assert sol.stats.per_sample["nfe"][b] == alone.stats.nfe
        # the Jacobians were autograd's (forward mode through the padded batch), none fell back
        assert int(sol.stats.extra.get("jacobian_fallbacks", 0)) == 0
