"""The checkpointed discrete adjoint against backprop, and the ``args`` channel under every gradient method."""

import pytest
import torch

import odekit
from odekit import InvalidInputError

GRADIENTS = ("backprop", "adjoint", "checkpoint")


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()


def _gradients(gradient, method="dopri5", **kwargs):
    net = _mlp()
    y0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=torch.float64, requires_grad=True)
    sol = odekit.solve(lambda s, y: net(y) * torch.cos(s), y0, t, method=method, gradient=gradient,
                       adjoint_params=tuple(net.parameters()), **kwargs)
    (sol.ys**2).sum().backward()
    return sol, [p.grad for p in net.parameters()] + [y0.grad, t.grad]


@pytest.mark.parametrize("method,kwargs", [
    ("dopri5", {"rtol": 1e-8, "atol": 1e-10}),
    ("tsit5", {"rtol": 1e-9, "atol": 1e-11}),
    ("bosh3", {"rtol": 1e-6, "atol": 1e-8, "options": {"jump_t": torch.tensor([0.7])}}),
    ("rk4", {"step_size": 0.05}),
])
def test_checkpoint_equals_backprop(method, kwargs):
    """The gradient of the discretisation itself: backprop's, to rounding, with far fewer saved tensors."""
    reference, expected = _gradients("backprop", method, **kwargs)
    sol, got = _gradients("checkpoint", method, **kwargs)
    assert sol.stats.steps_accepted == reference.stats.steps_accepted > 10
    # the same steps; values to rounding (the graph-free re-take may pick another kernel: 1 ulp on some CPUs)
    torch.testing.assert_close(sol.ys.detach(), reference.ys.detach(), rtol=1e-14, atol=1e-15)
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12 * float(a.abs().max()))


def test_checkpoint_differs_from_the_continuous_adjoint_by_the_solver_error():
    _, backprop = _gradients("backprop", rtol=1e-4, atol=1e-6)
    _, checkpoint = _gradients("checkpoint", rtol=1e-4, atol=1e-6)
    _, adjoint = _gradients("adjoint", rtol=1e-4, atol=1e-6)
    gap_checkpoint = max(float((a - b).abs().max()) for a, b in zip(backprop, checkpoint))
    gap_adjoint = max(float((a - b).abs().max()) for a, b in zip(backprop, adjoint))
    assert gap_checkpoint < 1e-10 < 1e-6 < gap_adjoint


def test_checkpoint_keeps_memory_to_the_square_root_of_the_steps():
    """Saved tensors during the backward pass: one segment's graph, not every step's."""
    net = _mlp()
    y0 = torch.randn(64, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    peak = {}

    class Held:
        """A saved tensor, counted while autograd keeps it."""

        live = top = 0

        def __init__(self, x):
            self.x = x
            Held.live += 1
            Held.top = max(Held.top, Held.live)

        def __del__(self):
            Held.live -= 1

    for gradient in ("backprop", "checkpoint"):
        Held.live = Held.top = 0
        with torch.autograd.graph.saved_tensors_hooks(Held, lambda held: held.x):
            sol = odekit.solve(lambda s, y: net(y), y0, t, method="rk4", step_size=1 / 400, gradient=gradient,
                               adjoint_params=tuple(net.parameters()))
            sol.ys[-1].sum().backward()
        peak[gradient] = Held.top
    # backprop saves per step; checkpointing saves per step of one segment of √400 = 20 steps
    assert peak["checkpoint"] * 8 < peak["backprop"]


def test_checkpoint_refuses_what_it_cannot_retake():
    y0, t = torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    for method in ("explicit_adams", "prox_be", "scipy_solver"):
        with pytest.raises(InvalidInputError, match="one-step method"):
            odekit.solve(lambda s, y: -y, y0, t, method=method, gradient="checkpoint", adjoint_params=(),
                         step_size=0.1 if method == "prox_be" else None)
    with pytest.raises(InvalidInputError, match="event_fn"):
        odekit.solve(lambda s, y: -y, y0, t, gradient="checkpoint", adjoint_params=(),
                     event_fn=lambda s, y: y[0] - 0.5)


def _field(t, y, args):
    return -args["rate"] * y + args["drive"][0] * torch.sin(t)


def _loss(rate, drive, gradient):
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    sol = odekit.solve(_field, y0, t, args={"rate": rate, "drive": (drive, "a label")}, gradient=gradient,
                       rtol=1e-10, atol=1e-12)
    return sol.ys.pow(2).sum()


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_args_gradients_match_finite_differences(gradient):
    rate = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
    drive = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    g_rate, g_drive = torch.autograd.grad(_loss(rate, drive, gradient), (rate, drive))
    eps = 1e-6
    with torch.no_grad():
        fd_rate = torch.stack([(_loss(rate + eps * e, drive, "backprop") - _loss(rate - eps * e, drive, "backprop"))
                               / (2 * eps) for e in torch.eye(2, dtype=torch.float64)])
        fd_drive = (_loss(rate, drive + eps, "backprop") - _loss(rate, drive - eps, "backprop")) / (2 * eps)
    assert torch.allclose(g_rate, fd_rate, atol=1e-7) and torch.allclose(g_drive, fd_drive, atol=1e-7)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_args_reach_a_module_field_beside_its_parameters(gradient):
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2).double()

        def forward(self, t, y, source):
            return torch.tanh(self.linear(y)) + source

    torch.manual_seed(0)
    field = Field()
    source = torch.tensor([0.1, -0.2], dtype=torch.float64, requires_grad=True)
    y0, t = torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol = odekit.solve(field, y0, t, args=source, gradient=gradient, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(sol.ys[-1].sum(), (source, field.linear.weight))
    reference = odekit.solve(lambda s, y: field(s, y, source), y0, t, rtol=1e-10, atol=1e-12)
    expected = torch.autograd.grad(reference.ys[-1].sum(), (source, field.linear.weight))
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, atol=1e-8)


def test_a_failed_backward_solve_is_never_silent():
    from odekit.solve.solution import Status

    theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 3, 4, dtype=torch.float64)
    settings = dict(gradient="adjoint", adjoint_params=(theta,), adjoint_options={"max_num_steps": 3})
    sol = odekit.solve(lambda s, y: -30 * theta * y, y0, t, throw=False, **settings)
    assert sol.status is Status.SUCCESS  # the forward solve succeeded
    sol.ys.sum().backward()
    assert sol.status is Status.MAX_STEPS_EXCEEDED and not sol.ok
    assert sol.message.startswith("backward (adjoint) solve from t=3 to t=2 failed")
    assert "max_num_steps=3" in sol.message
    assert torch.isnan(theta.grad)
    with pytest.raises(odekit.MaxStepsExceededError, match="max_num_steps=3"):
        odekit.solve(lambda s, y: -30 * theta * y, y0, t, **settings).ys.sum().backward()


def test_status_is_an_enum_that_reads_as_its_name():
    from odekit.solve.solution import Status

    sol = odekit.solve(lambda s, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0]).double())
    assert sol.status is Status.SUCCESS and sol.status == "success" and f"{sol.status}" == "success"
    assert Status("non_finite") is Status.NON_FINITE and "NaN" in Status.NON_FINITE.message
