"""gradient="implicit": each converged proximal stage differentiated by the implicit function theorem."""

import pytest
import torch

import odekit
from odekit.solve.errors import InvalidInputError

F64 = torch.float64


class Linear(torch.nn.Module):
    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a.clone())

    def forward(self, t, y):
        return self.a @ y


def _stiff_matrix(n: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64))
    return q @ torch.diag(-torch.logspace(-1, 2, n, dtype=F64)) @ q.T + 0.1 * torch.randn(n, n, dtype=F64)


INNER = {"inner": "fr", "inner_res_tol": 1e-13, "inner_max_iters": 20000, "inner_step": 0.05}


def test_the_implicit_gradient_is_the_exact_gradient_of_backward_euler():
    """Backward Euler's discrete solution is y_{k+1} = (I − hA)⁻¹ y_k: differentiate that by autograd."""
    a = _stiff_matrix()
    y0 = torch.randn(8, dtype=F64, requires_grad=True)
    h, steps = 0.1, 5
    exact_field = Linear(a)
    y = y0
    for _ in range(steps):
        y = torch.linalg.solve(torch.eye(8, dtype=F64) - h * exact_field.a, y)
    y.square().sum().backward()
    field = Linear(a)
    x0 = y0.detach().clone().requires_grad_(True)
    sol = odekit.solve(field, x0, torch.tensor([0.0, h * steps], dtype=F64), method="prox_be", step_size=h,
                       gradient="implicit", options=INNER)
    sol.ys[-1].square().sum().backward()
    torch.testing.assert_close(field.a.grad, exact_field.a.grad, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(x0.grad, y0.grad, rtol=1e-7, atol=1e-9)


class Nonlinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.w = torch.nn.Parameter(torch.randn(4, 4, dtype=F64) * 0.5)
        self.b = torch.nn.Parameter(torch.randn(4, dtype=F64) * 0.1)

    def forward(self, t, y):
        return torch.tanh(self.w @ y + self.b) - 3.0 * y


@pytest.mark.parametrize("method", ["prox_be", "prox_bdf2", "prox_cn"])
def test_implicit_gradients_match_finite_differences_and_unrolled_backprop(method):
    field = Nonlinear()
    y0 = torch.linspace(-1, 1, 4, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def loss(gradient):
        return odekit.solve(field, y0, t, method=method, step_size=0.1, gradient=gradient, options=INNER).ys[-1].sum()

    grads = {}
    for gradient in ("implicit", "backprop"):
        field.zero_grad()
        loss(gradient).backward()
        grads[gradient] = field.w.grad.clone()
    eps = 1e-6
    with torch.no_grad():
        field.w[1, 2] += eps
        up = loss("backprop").item()
        field.w[1, 2] -= 2 * eps
        down = loss("backprop").item()
        field.w[1, 2] += eps
    assert grads["implicit"][1, 2].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5)
    torch.testing.assert_close(grads["implicit"], grads["backprop"], rtol=1e-6, atol=1e-9)


def _saved_bytes(gradient: str) -> int:
    """Bytes autograd keeps for the backward pass of one solve."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    field = Linear(_stiff_matrix())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        sol = odekit.solve(field, torch.ones(8, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="prox_be",
                           step_size=0.1, gradient=gradient, options=INNER)
    assert sol.stats.extra["inner_iterations"] > 10 * sol.stats.extra["inner_solves"]
    return sum(saved)


def test_memory_does_not_grow_with_the_inner_iterations():
    assert _saved_bytes("implicit") * 10 < _saved_bytes("backprop")


def test_implicit_gradients_need_a_proximal_method():
    with pytest.raises(InvalidInputError, match="gradient='implicit' differentiates the implicit stages"):
        odekit.solve(Linear(_stiff_matrix()), torch.ones(8, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                     method="dopri5", gradient="implicit")
    sol = odekit.solve(Linear(_stiff_matrix()), torch.ones(8, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                       solver=odekit.Proximal("prox_be"), controller=odekit.FixedGrid(step_size=0.1),
                       gradient=odekit.ImplicitDifferentiation())
    assert sol.ys.requires_grad
