"""Gradients: adjoint vs backprop vs finite differences, for tensor and tuple states."""

import pytest
import torch

import odekit


class TimeMLP(torch.nn.Module):
    """A small non-autonomous field ``f(t, y) = W2 tanh(W1 [y, t])``."""

    def __init__(self, dim=2, hidden=6):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, dim)
        ).double()

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1))


class HeavyBall(torch.nn.Module):
    """A tuple-state field ``(h, m)' = (m, f(h) − γ m)`` shaped like HBNODE."""

    def __init__(self):
        super().__init__()
        self.f = TimeMLP()
        self.gamma = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, t, state):
        h, m = state
        return m, self.f(t, h) - self.gamma * m


FIXED = {"method": "rk4", "step_size": 0.02}  # smooth in the inputs, as gradcheck needs
# Time gradients, and every adjoint gradient, are those of the continuous problem: they differ
# from the exact derivative of the discrete rk4 map by O(h^4), hence the looser tolerance.
CONTINUOUS_TOL = 1e-5


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_gradcheck_tensor_state_wrt_y0_t_and_parameters(gradient):
    field = TimeMLP()
    params = tuple(field.parameters())
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64, requires_grad=True)

    def run(y0, t, *params):
        return odekit.solve(field, y0, t, gradient=gradient, **FIXED).ys

    assert torch.autograd.gradcheck(run, (y0, t, *params), atol=CONTINUOUS_TOL, rtol=CONTINUOUS_TOL)
    if gradient == "backprop":  # without t, backprop is the exact derivative of the discrete solve
        assert torch.autograd.gradcheck(lambda y0, *p: run(y0, t.detach(), *p), (y0, *params))


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_gradcheck_tuple_state(gradient):
    field = HeavyBall()
    h0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    m0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)

    def run(h0, m0, t, gamma):
        hs, ms = odekit.solve(field, (h0, m0), t, gradient=gradient, **FIXED).ys
        return hs.sum(-1) + 0.5 * ms.square().sum(-1)

    assert torch.autograd.gradcheck(run, (h0, m0, t, field.gamma), atol=CONTINUOUS_TOL, rtol=CONTINUOUS_TOL)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_adjoint_matches_backprop_with_adaptive_steps(method):
    field = HeavyBall()
    h0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    m0 = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=torch.float64).requires_grad_()
    grads = {}
    for gradient in ("backprop", "adjoint"):
        sol = odekit.solve(field, (h0, m0), t, method=method, rtol=1e-10, atol=1e-10, gradient=gradient)
        loss = sol.ys[0].pow(2).sum() + sol.ys[1][-1].sum()
        grads[gradient] = torch.autograd.grad(loss, (h0, m0, t, *field.parameters()))
        assert sol.stats.nfe_backward > 0
    for a, b in zip(grads["backprop"], grads["adjoint"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_time_gradient_matches_finite_differences_with_adaptive_steps():
    field = TimeMLP()
    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.1, 0.6, 1.3], dtype=torch.float64)

    def loss(t, gradient="backprop"):
        return odekit.solve(field, y0, t, rtol=1e-12, atol=1e-12, gradient=gradient).ys[1:].pow(2).sum()

    eps = 1e-5
    fd = torch.stack([(loss(t + eps * e) - loss(t - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=t.dtype)])
    for gradient in ("backprop", "adjoint"):
        tt = t.clone().requires_grad_()
        (g,) = torch.autograd.grad(loss(tt, gradient), tt)
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-7)


def test_backward_nfe_is_recorded():
    field = TimeMLP()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    adjoint = odekit.solve(field, y0, t, gradient="adjoint", rtol=1e-6, atol=1e-8)
    assert adjoint.stats.nfe_backward == 0
    adjoint.ys.sum().backward()
    assert adjoint.stats.nfe_backward > 0 and adjoint.stats.steps_backward > 0
    backprop = odekit.solve(field, y0, t, rtol=1e-6, atol=1e-8)
    backprop.ys.sum().backward()
    assert backprop.stats.nfe_backward == backprop.stats.nfe


def test_adjoint_uses_constant_memory_in_the_number_of_steps():
    """The adjoint's forward pass keeps no graph: nothing saved grows with the step count."""
    field = TimeMLP()
    y0 = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)
    saved = {}
    for tol in (1e-3, 1e-10):
        sizes = []

        def pack(x):
            sizes.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            sol = odekit.solve(field, y0, t, gradient="adjoint", rtol=tol, atol=tol)
        saved[tol] = (sum(sizes), sol.stats.steps)
    assert saved[1e-10][1] > 3 * saved[1e-3][1]
    assert saved[1e-10][0] == saved[1e-3][0]


def test_seminorm_takes_fewer_backward_steps_with_the_same_gradient():
    field = TimeMLP(hidden=32)
    y0 = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    results = {}
    for norm in ("mixed", "seminorm"):
        sol = odekit.solve(field, y0, t, gradient="adjoint", rtol=1e-6, atol=1e-8, adjoint_options={"norm": norm})
        (g,) = torch.autograd.grad(sol.ys[-1].pow(2).sum(), y0)
        results[norm] = (g, sol.stats.nfe_backward)
    assert results["seminorm"][1] <= results["mixed"][1]
    torch.testing.assert_close(results["seminorm"][0], results["mixed"][0], rtol=1e-4, atol=1e-6)


def test_adjoint_with_explicit_params_for_a_plain_function():
    w = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    losses = {}
    for gradient in ("backprop", "adjoint"):
        ys = odekit.solve(lambda t, y: w @ y, y0, t, gradient=gradient, adjoint_params=(w,), rtol=1e-10, atol=1e-12).ys
        (losses[gradient],) = torch.autograd.grad(ys[-1].sum(), w)
    torch.testing.assert_close(losses["adjoint"], losses["backprop"], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_single_output_time_passes_the_gradient_straight_through(gradient):
    y0 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    sol = odekit.solve(lambda t, y: -y, y0, t, gradient=gradient, adjoint_params=())
    g_y0, g_t = torch.autograd.grad(sol.ys.square().sum(), (y0, t), allow_unused=True)
    torch.testing.assert_close(g_y0, 2 * y0.detach())
    assert g_t is None or float(g_t.abs().sum()) == 0.0
