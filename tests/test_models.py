"""The heavy-ball model family: sizes, solvers, gradients, and the adjoint theory of §3.3."""

import math

import numpy as np
import pytest
import torch

import odekit
from odekit.models import (
    MODEL_KINDS,
    MLPField,
    ODEBlock,
    count_parameters,
    ghbnode,
    hbnode,
    image_model,
    pointcloud_model,
)
from odekit.models.dynamics import HeavyBall
from odekit.models.zoo import THESIS_PARAMS
from odekit.solve import METHODS


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_parameter_counts_match_tables_3_2_and_3_3(kind):
    counts = {"pointcloud": count_parameters(pointcloud_model(kind)),
              "mnist": count_parameters(image_model(kind, "mnist")),
              "cifar10": count_parameters(image_model(kind, "cifar10"))}
    for task, count in counts.items():
        assert abs(count - THESIS_PARAMS[task][kind]) <= 0.02 * THESIS_PARAMS[task][kind], (task, count)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_image_models_run_and_report_nfe(kind):
    model = image_model(kind, "mnist", rtol=1e-2, atol=1e-2)
    logits = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert model.stats.nfe > 0 and model.stats.nfe_backward == 0
    logits.square().sum().backward()
    assert model.stats.nfe_backward > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


# scipy_solver runs outside autograd (no backprop); its adjoint is tested in test_scipy_solver.py.
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"scipy_solver"}))
def test_hbnode_with_every_solver_and_both_gradients(method):
    torch.manual_seed(0)
    model = pointcloud_model("hbnode").double()
    x = torch.randn(6, 2, dtype=torch.float64)
    options = None if METHODS[method].adaptive else {"step_size": 0.05}
    if method.endswith("_adams"):  # order 4; the default order 12 is unstable at this step
        options["max_order"] = 5
    if method.startswith("prox"):  # inner solves far below the discretisation error
        options = {**(options or {}), "inner_res_tol": 1e-11}
    order = METHODS[method].make_solver(options or {}, 1e-6, 1e-6).order
    rtol = {2: 1e-6, 3: 1e-8}.get(order, 1e-9)  # affordable tolerances for low-order pairs
    grads = {}
    for gradient in ("backprop", "adjoint"):
        model.block.method, model.block.gradient, model.block.options = method, gradient, options
        model.block.rtol = model.block.atol = rtol
        model.zero_grad()
        model(x).sum().backward()
        grads[gradient] = [p.grad.clone() for p in model.parameters()]
    # The adjoint is the continuous gradient; backprop is the discrete one: close for a fine solve.
    if METHODS[method].adaptive:
        tol = {2: 1e-3, 3: 1e-5}.get(order, 1e-5)
    else:
        tol = {1: 5e-2, 2: 5e-3, 3: 5e-4}.get(order, 1e-5)
    for a, b in zip(grads["backprop"], grads["adjoint"]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _heavy_ball_adjoint_check(dynamics, rhs):
    """Finite differences of ``a(t) = ∂L/∂(h, m)(t)`` along a trajectory against the adjoint ODE ``rhs``."""
    torch.manual_seed(1)
    dynamics = dynamics.double()
    h0, m0 = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    T, tight = 1.0, dict(rtol=1e-12, atol=1e-12)
    weights = torch.randn(2, 3, dtype=torch.float64)

    def state_at(t):
        if t == 0:
            return h0, m0
        hs, ms = odekit.odeint(dynamics, (h0, m0), torch.tensor([0.0, t], dtype=torch.float64), **tight)
        return hs[-1], ms[-1]

    def adjoint_at(t):
        h, m = (s.detach().requires_grad_() for s in state_at(t))
        hs, ms = odekit.odeint(dynamics, (h, m), torch.tensor([t, T], dtype=torch.float64), **tight)
        loss = (weights * hs[-1]).sum() + hs[-1].square().sum() + ms[-1].sin().sum()
        return torch.autograd.grad(loss, (h, m))

    delta = 1e-3
    for t in (0.2, 0.5, 0.8):
        plus, minus = adjoint_at(t + delta), adjoint_at(t - delta)
        numeric = [(p - q) / (2 * delta) for p, q in zip(plus, minus)]
        a_h, a_m = adjoint_at(t)
        h, m = state_at(t)
        expected = rhs(h, m, a_h, a_m)
        for got, want in zip(numeric, expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _vjp_f(f, h, a_m):
    h = h.detach().requires_grad_()
    (g,) = torch.autograd.grad(f(torch.zeros((), dtype=h.dtype), h), h, a_m)
    return g


def test_hbnode_adjoint_obeys_eq_3_49():
    dyn = hbnode(MLPField(3, 8, act="tanh"), gamma=0.3)
    gamma = float(dyn.gamma.detach())

    def rhs(h, m, a_h, a_m):
        return -_vjp_f(dyn.f, h, a_m), -a_h + gamma * a_m

    _heavy_ball_adjoint_check(dyn, rhs)


def test_ghbnode_adjoint_obeys_eq_3_57():
    dyn = ghbnode(MLPField(3, 8, act="tanh"), gamma=0.3, xi=0.7)
    gamma, xi = float(dyn.gamma.detach()), float(dyn.xi.detach())

    def rhs(h, m, a_h, a_m):
        gate_slope = 1 - torch.tanh(m) ** 2
        return -_vjp_f(dyn.f, h, a_m) + xi * a_m, -a_h * gate_slope + gamma * a_m

    _heavy_ball_adjoint_check(dyn, rhs)


@pytest.mark.parametrize("seed", range(5))
def test_proposition_4_eigenvalues_pair_up(seed):
    """H = [[0, J], [F, −γI]] has eigenvalues in pairs summing to −γ (so −M pairs sum to (t−T)γ)."""
    rng = np.random.default_rng(seed)
    n, gamma = 5, rng.uniform(0.1, 2.0)
    F, J = rng.normal(size=(n, n)), np.diag(rng.uniform(0.1, 1.0, size=n))
    H = np.block([[np.zeros((n, n)), J], [F, -gamma * np.eye(n)]])
    eigs = np.linalg.eigvals(H)
    # Each eigenvalue λ of H solves λ(λ + γ) = μ for an eigenvalue μ of JF (eq. 3.83) ...
    mus = np.linalg.eigvals(J @ F)
    roots = np.concatenate([np.roots([1.0, gamma, -mu]) for mu in mus])
    distance = np.abs(eigs[:, None] - roots[None, :])
    assert distance.min(axis=1).max() < 1e-8 and distance.min(axis=0).max() < 1e-8
    # ... so its partner −γ − λ is also an eigenvalue.
    for lam in eigs:
        assert np.min(np.abs(eigs - (-gamma - lam))) < 1e-8


def test_heavy_ball_settings_are_checked():
    with pytest.raises(ValueError, match="gamma must lie in"):
        HeavyBall(MLPField(2, 4), gamma=1.5)
    with pytest.raises(ValueError, match="unknown gate"):
        HeavyBall(MLPField(2, 4), gate="relu")
    with pytest.raises(ValueError, match="unknown model"):
        pointcloud_model("resnet")
    dyn = ghbnode(MLPField(2, 4), learn_xi=False)
    assert not dyn.chi.requires_grad and math.isclose(float(dyn.xi.detach()), math.log(2.0), rel_tol=1e-6)
    assert dyn.omega.requires_grad and math.isclose(float(dyn.gamma.detach()), 1 / (1 + math.exp(3)), rel_tol=1e-6)


def test_ode_block_returns_trajectories_at_given_times():
    block = ODEBlock(hbnode(MLPField(2, 4)).double(), rtol=1e-8, atol=1e-8)
    h0 = torch.randn(3, 2, dtype=torch.float64)
    times = torch.linspace(0, 1, 4, dtype=torch.float64)
    hs, ms = block((h0, torch.zeros_like(h0)), times)
    assert hs.shape == (4, 3, 2) and torch.equal(hs[0], h0)
    h_end, _ = block((h0, torch.zeros_like(h0)))
    torch.testing.assert_close(h_end, hs[-1])
