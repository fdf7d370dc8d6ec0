"""gradient="implicit": each converged implicit stage (proximal, implicit Runge–Kutta, BDF) differentiated by the
implicit function theorem."""

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


@pytest.mark.parametrize("method", ["radauIIA5", "gl4", "sdirk2", "trbdf2"])
def test_implicit_runge_kutta_stages_differentiate_implicitly(method):
    """Fully implicit (coupled stages: (I − h A ⊗ J)ᵀ λ = g) and diagonally implicit tableaus: the
    implicit gradient equals backprop through the converged Newton iterations and finite differences."""
    field = Nonlinear()
    y0 = torch.linspace(-1, 1, 4, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def loss(gradient, start=y0):
        return odekit.solve(field, start, t, method=method, step_size=0.1, gradient=gradient).ys[-1].square().sum()

    grads = {}
    for gradient in ("implicit", "backprop"):
        field.zero_grad()
        y0.grad = None
        loss(gradient).backward()
        grads[gradient] = (field.w.grad.clone(), y0.grad.clone())
    for implicit, unrolled in zip(grads["implicit"], grads["backprop"]):
        torch.testing.assert_close(implicit, unrolled, rtol=1e-7, atol=1e-10)
    eps = 1e-6
    with torch.no_grad():
        shift = torch.zeros_like(y0)
        shift[2] = eps
        fd = (loss("backprop", y0 + shift) - loss("backprop", y0 - shift)).item() / (2 * eps)
    assert grads["implicit"][1][2].item() == pytest.approx(fd, rel=1e-6)


def test_bdf_implicit_gradient_matches_the_exact_gradient():
    """Variable-order BDF at a tight tolerance: the implicit gradient of its correctors approximates the
    derivative of the exact solution, here from dopri5 at 1e-12 (which its own backprop differentiates)."""
    field = Nonlinear()
    y0 = torch.linspace(-1, 1, 4, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    grads = {}
    for method, gradient, tol in (("bdf", "implicit", 1e-10), ("dopri5", "backprop", 1e-12)):
        field.zero_grad()
        sol = odekit.solve(field, y0, t, method=method, rtol=tol, atol=tol, gradient=gradient)
        sol.ys[-1].square().sum().backward()
        grads[method] = field.w.grad.clone()
    torch.testing.assert_close(grads["bdf"], grads["dopri5"], rtol=1e-5, atol=1e-8)


def test_bdf_implicit_gradient_equals_backprop_on_a_linear_field():
    """f = A y with the exact Jacobian: one Newton iteration is exact, so backprop through it is the
    discrete scheme's gradient, which the implicit one must equal on the same steps."""
    a = _stiff_matrix()
    grads, steps, saved = {}, {}, {}
    for gradient in ("implicit", "backprop"):
        field = Linear(a)
        x0 = torch.ones(8, dtype=F64, requires_grad=True)
        sizes = []

        def pack(tensor, sizes=sizes):
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            sol = odekit.solve(field, x0, torch.tensor([0.0, 1.0], dtype=F64), method="bdf", rtol=1e-6, atol=1e-8,
                               gradient=gradient, options={"jacobian": "autograd"})
        sol.ys[-1].square().sum().backward()
        grads[gradient], steps[gradient], saved[gradient] = (
            (field.a.grad, x0.grad), sol.stats.steps_accepted, sum(sizes))
    assert steps["implicit"] == steps["backprop"]
    assert saved["implicit"] < saved["backprop"]  # Newton ran without a graph
    for implicit, unrolled in zip(grads["implicit"], grads["backprop"]):
        torch.testing.assert_close(implicit, unrolled, rtol=1e-6, atol=1e-9)


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


def test_implicit_gradients_need_an_implicit_method():
    with pytest.raises(InvalidInputError, match="gradient='implicit' differentiates the implicit stages"):
        odekit.solve(Linear(_stiff_matrix()), torch.ones(8, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                     method="dopri5", gradient="implicit")
    sol = odekit.solve(Linear(_stiff_matrix()), torch.ones(8, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                       solver=odekit.Proximal("prox_be"), controller=odekit.FixedGrid(step_size=0.1),
                       gradient=odekit.ImplicitDifferentiation())
    assert sol.ys.requires_grad


@pytest.mark.parametrize("method, kwargs", [("prox_bdf2", {"step_size": 0.1, "options": INNER}),
                                            ("radauIIA5", {"step_size": 0.1}), ("bdf", {"rtol": 1e-8, "atol": 1e-8})])
def test_backward_nfe_counts_the_adjoint_products_not_the_inner_iterations(method, kwargs):
    """Backprop counts every recorded f call as a backward evaluation; the implicit gradient records
    only one per stage and does its work in GMRES products, which are what its backward NFE count."""
    counts = {}
    for gradient in ("backprop", "implicit"):
        field = Nonlinear()
        sol = odekit.solve(field, torch.linspace(-1, 1, 4, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                           method=method, gradient=gradient, **kwargs)
        sol.ys[-1].sum().backward()
        counts[gradient] = (sol.stats.nfe, sol.stats.nfe_backward, sol.stats.extra.get("nfe_without_graph", 0))
    nfe, backward, without = counts["backprop"]
    assert backward == nfe and without == 0
    nfe, backward, without = counts["implicit"]
    assert 0 < without < nfe  # the inner iterations ran without a graph ...
    assert backward > nfe - without  # ... and the products came on top of the recorded evaluations
