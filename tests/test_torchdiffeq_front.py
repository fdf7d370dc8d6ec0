"""odekit.torchdiffeq: torchdiffeq's surface (dtype rule, options, callbacks, events, dense output)."""

import math
import warnings

import pytest
import torch

import odekit
import odekit.torchdiffeq as td

F64 = torch.float64


def decay(t, y):
    return -y


def test_module_exports_torchdiffeqs_names():
    assert sorted(td.__all__) == ["odeint", "odeint_adjoint", "odeint_dense", "odeint_event"]


def test_time_in_another_dtype_is_promoted_and_f_sees_the_state_dtype():
    seen = []

    def f(t, y):
        seen.append(t.dtype)
        return -y

    y0 = torch.ones(3, dtype=torch.float32)
    ys = td.odeint(f, y0, torch.linspace(0, 1, 4, dtype=F64))
    assert ys.dtype == torch.float32 and set(seen) == {torch.float32}
    assert torch.allclose(ys[-1], torch.full((3,), math.exp(-1.0)), atol=1e-6)
    # The engine's own solve stays strict.
    with pytest.raises(odekit.InvalidInputError, match="dtype"):
        odekit.solve(f, y0, torch.linspace(0, 1, 4, dtype=F64))


def test_unknown_options_warn_and_are_ignored():
    with pytest.warns(UserWarning, match="Unexpected arguments"):
        ys = td.odeint(decay, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), options={"bogus": 1})
    assert ys[-1].item() == pytest.approx(math.exp(-1), rel=1e-7)


def test_callbacks_count_steps_forward_and_backward():
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(-1.0, dtype=F64))
            self.counts = {}

        def forward(self, t, y):
            return self.w * y * torch.sin(5 * t)

    f = Field()
    # torchdiffeq's attribute names, each counting its calls under the name used below.
    names = {"callback_step": "step", "callback_accept_step": "accept", "callback_reject_step": "reject",
             "callback_step_adjoint": "step_adjoint", "callback_accept_step_adjoint": "accept_adjoint",
             "callback_reject_step_adjoint": "reject_adjoint"}
    for attribute, name in names.items():
        f.counts[name] = 0
        setattr(f, attribute, lambda t0, y0, dt, name=name: f.counts.__setitem__(name, f.counts[name] + 1))
    with odekit.record_stats() as rec:
        ys = td.odeint_adjoint(f, torch.ones(2, dtype=F64, requires_grad=True), torch.tensor([0.0, 3.0], dtype=F64))
        ys.sum().backward()
    stats = rec.solves[0]
    assert f.counts["step"] == stats.steps_accepted + stats.steps_rejected
    assert f.counts["accept"] == stats.steps_accepted and f.counts["reject"] == stats.steps_rejected
    assert f.counts["step_adjoint"] == stats.steps_backward > 0
    assert f.counts["accept_adjoint"] + f.counts["reject_adjoint"] == f.counts["step_adjoint"]


def test_fixed_grid_rejects_accept_callbacks_with_a_warning():
    def f(t, y):
        return -y

    f.callback_accept_step = lambda t0, y0, dt: None
    with pytest.warns(UserWarning, match="does not support callbacks"):
        td.odeint(f, torch.ones(2), torch.tensor([0.0, 1.0]), method="rk4")


@pytest.mark.parametrize("method,options", [("dopri5", {}), ("tsit5", {}),
                                            ("rk4", {"step_size": 0.01, "interp": "cubic"}),
                                            ("euler", {"step_size": 0.001, "interp": "cubic"})])
@pytest.mark.parametrize("reverse", [False, True])
def test_event_time_and_state(method, options, reverse):
    """y' = −y from 1 reaches 0.5 at t = ln 2 (forward) or 2 at t = −ln 2 (backward)."""
    level = 2.0 if reverse else 0.5
    t = torch.tensor([0.0, -1.0 if reverse else 1.0], dtype=F64)
    event_t, ys = td.odeint(decay, torch.ones(1, dtype=F64), t, method=method, options=options,
                            event_fn=lambda t, y: y.sum() - level)
    expected = -math.log(level)
    assert event_t.item() == pytest.approx(expected, abs=1e-3 if method == "euler" else 1e-6)
    assert ys.shape == (2, 1) and ys[-1].item() == pytest.approx(level, rel=1e-3 if method == "euler" else 1e-6)


@pytest.mark.parametrize("interface", [td.odeint, td.odeint_adjoint])
def test_event_time_gradient_matches_finite_differences(interface):
    """y' = −a·y, y(0) = y0: the event y = 0.5 happens at t* = ln(2·y0)/a."""
    a = torch.tensor(1.3, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.7], dtype=F64, requires_grad=True)

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(a.detach().clone())

        def forward(self, t, y):
            return -self.a * y

    f = Field()
    event_t, ys = td.odeint_event(f, y0, torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y.sum() - 0.5,
                                  odeint_interface=interface, rtol=1e-10, atol=1e-12)
    (event_t + 3 * ys[-1].sum()).backward()
    exact_t = math.log(2 * 1.7) / 1.3
    assert event_t.item() == pytest.approx(exact_t, rel=1e-8)
    # d/dy0 of t* = 1/(a y0); d/da of t* = −t*/a; the state at the event is always 0.5 (zero gradient).
    assert y0.grad.item() == pytest.approx(1 / (1.3 * 1.7), rel=1e-5)
    assert f.a.grad.item() == pytest.approx(-exact_t / 1.3, rel=1e-5)


def test_odeint_dense_evaluates_anywhere():
    dense = td.odeint_dense(decay, torch.ones(2, dtype=F64), torch.tensor(0.0, dtype=F64), torch.tensor(3.0, dtype=F64))
    times = torch.linspace(0, 3, 17, dtype=F64)
    values = dense(times)
    assert values.shape == (17, 2)
    assert torch.allclose(values, torch.exp(-times)[:, None].expand(17, 2), atol=1e-7)
    assert dense(torch.tensor(1.0, dtype=F64)).shape == (2,)
    with pytest.raises(ValueError, match="covers"):
        dense(torch.tensor(4.0, dtype=F64))


class _Jump:
    """f jumps at t = 0.5 (torchdiffeq's test field)."""

    def __init__(self):
        self.nfe = 0

    def __call__(self, t, x):
        self.nfe += 1
        return -0.5 * x if t < 0.5 else x**2


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
def test_jump_t_saves_evaluations_and_is_accurate(method):
    x0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    plain, marked = _Jump(), _Jump()
    td.odeint(plain, x0, t, rtol=1e-8, atol=1e-8, method=method)
    ys = td.odeint(marked, x0, t, rtol=1e-8, atol=1e-8, method=method, options={"jump_t": torch.tensor([0.5])})
    assert marked.nfe < plain.nfe
    # Exact: x(0.5) = x0·e^{−1/4}, then x' = x²: x(1) = x(0.5)/(1 − 0.5·x(0.5)).
    mid = x0 * math.exp(-0.25)
    assert torch.allclose(ys[-1], mid / (1 - 0.5 * mid), rtol=1e-6)


def test_step_t_makes_steps_land_there():
    ends = []

    def f(t, y):
        return -y

    f.callback_accept_step = lambda t0, y0, dt: ends.append(float(t0 + dt))
    td.odeint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 5.0], dtype=F64), options={"step_t": [0.123, 2.5]})
    assert any(abs(e - 0.123) < 1e-12 for e in ends) and any(abs(e - 2.5) < 1e-12 for e in ends)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_perturb_avoids_grid_points(dtype):
    ts = []

    def f(t, x):
        ts.append(t.item())
        return -x

    td.odeint(f, torch.ones(2, dtype=dtype), torch.tensor([0.0, 1.0]), method="rk4",
              options={"step_size": 0.5, "perturb": True})
    assert 0.0 not in ts and 0.5 not in ts and 1.0 not in ts
    ts.clear()
    td.odeint(f, torch.ones(2, dtype=dtype), torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.5})
    assert 0.0 in ts and 0.5 in ts


def test_grid_constructor_forward_and_adjoint():
    x0 = torch.tensor(1.0, requires_grad=True)
    calls = []

    def grid(f, y0, t):
        calls.append(t.tolist())
        return torch.linspace(float(t[0]), float(t[1]), 11)

    xs = td.odeint_adjoint(lambda t, x: x, x0, torch.tensor([0.0, 1.0]), method="euler",
                           options={"grid_constructor": grid}, adjoint_params=())
    assert xs[1].item() == pytest.approx(1.1**10, rel=1e-6)
    xs[1].backward()
    assert x0.grad.item() == pytest.approx(1.1**10, rel=1e-6)
    assert calls == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(odekit.InvalidInputError, match="grid"):
        odekit.solve(lambda t, x: x, x0, torch.tensor([0.0, 1.0]), method="euler",
                     options={"grid_constructor": lambda f, y0, t: torch.tensor([0.0, 0.7])})


def test_min_and_max_step():
    f = _Counting()
    odekit.solve(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 8.0], dtype=F64), options={"min_step": 2.0})
    assert f.nfe < 40
    sol = odekit.solve(decay, torch.ones(2, dtype=F64), torch.tensor([0.0, 8.0], dtype=F64), rtol=1e-3, atol=1e-3,
                       options={"max_step": 0.1})
    assert sol.stats.steps_accepted >= 80
    with pytest.raises(odekit.InvalidInputError, match="min_step"):
        odekit.solve(decay, torch.ones(2), torch.tensor([0.0, 1.0]), options={"min_step": 2.0, "max_step": 1.0})


class _Counting:
    def __init__(self):
        self.nfe = 0

    def __call__(self, t, y):
        self.nfe += 1
        return torch.stack([y[1], -y[0]])


def test_per_component_tolerances():
    """A loose tolerance on one component and a tight one on the other: only the first is coarse."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 10.0], dtype=F64)
    exact = torch.tensor([math.cos(10.0), -math.sin(10.0)], dtype=F64)
    f = _Counting()
    tight = odekit.solve(f, y0, t, rtol=torch.tensor([1e-10, 1e-10], dtype=F64), atol=1e-12)
    loose = odekit.solve(f, y0, t, rtol=torch.tensor([1e-3, 1e-3], dtype=F64), atol=1e-6)
    mixed = odekit.solve(f, y0, t, rtol=torch.tensor([1e-3, 1e-10], dtype=F64), atol=1e-12)
    assert (tight.ys[-1] - exact).abs().max() < 1e-8 < (loose.ys[-1] - exact).abs().max()
    assert tight.stats.nfe >= mixed.stats.nfe > loose.stats.nfe
    pair = odekit.solve(lambda t, y: (y[1], -y[0]), (y0[:1], y0[1:]), t, rtol=(1e-10, 1e-10), atol=(1e-12, 1e-12))
    assert (torch.cat(pair.ys, dim=1)[-1] - exact).abs().max() < 1e-8
    with pytest.raises(odekit.InvalidInputError, match="broadcast"):
        odekit.solve(f, y0, t, rtol=torch.ones(3, dtype=F64))


def test_complex_state_forward_and_gradients():
    """y' = i·ω·y: y(1) = y0·e^{iω}."""
    omega = torch.tensor(2.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0 + 0.5j], dtype=torch.complex128)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ys = td.odeint(lambda t, y: 1j * omega * y, y0, t, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ys[-1], y0 * torch.exp(torch.tensor(2.0j, dtype=torch.complex128)), atol=1e-9)
    ys[-1].real.sum().backward()
    # d/dω Re(y0 e^{iω}) = Re(i y0 e^{iω})
    expected = (1j * y0 * torch.exp(torch.tensor(2.0j, dtype=torch.complex128))).real.sum()
    assert omega.grad.item() == pytest.approx(expected.item(), rel=1e-6)
    grad_backprop = omega.grad.clone()
    omega.grad = None
    ys = td.odeint_adjoint(lambda t, y: 1j * omega * y, y0, t, rtol=1e-10, atol=1e-12, adjoint_params=(omega,))
    ys[-1].real.sum().backward()
    assert omega.grad.item() == pytest.approx(grad_backprop.item(), rel=1e-6)


def test_adjoint_of_a_field_without_y_or_parameters():
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64, requires_grad=True)
    ys = td.odeint_adjoint(lambda t, y: torch.cos(t) * torch.ones_like(y), y0, t, adjoint_params=())
    ys.sum().backward()
    assert torch.allclose(y0.grad, torch.full((2,), 3.0, dtype=F64))
    # dL/dt_i = Σ f(t_i) for i ≥ 1; t0: −Σ_i a(t0)·f(t0) = −(2 outputs)·2·cos 0
    assert torch.allclose(t.grad, torch.tensor([-4.0, 2 * math.cos(1.0), 2 * math.cos(2.0)], dtype=F64), atol=1e-6)


def test_callable_adjoint_norm_sees_the_structured_augmented_state():
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return max(p.abs().max() for p in parts)

    w = torch.tensor([0.5, -0.2], dtype=F64, requires_grad=True)
    y0 = (torch.tensor(1.0, dtype=F64), torch.ones(2, 2, dtype=F64))
    ys = td.odeint_adjoint(lambda t, y: (-y[0] * w[0], y[1] * w[1]), y0, torch.tensor([0.0, 1.0], dtype=F64),
                           adjoint_params=(w,), adjoint_options={"norm": norm})
    (ys[0].sum() + ys[1].sum()).backward()
    assert seen and seen[0] == ((), (), (2, 2), (), (2, 2), (2,))
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_warns_nothing_for_valid_calls():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        td.odeint(decay, torch.ones(1), torch.tensor([0.0, 1.0]), method="dopri5", options={"first_step": 0.1})


@pytest.mark.parametrize("step", [1e-8, 1e-300])
def test_a_tiny_fixed_step_fails_at_the_cap_without_building_the_grid(step):
    """The grid is produced step by step: the cap (or the step underflow) fires at once."""
    with pytest.raises((odekit.MaxStepsExceededError, odekit.StepSizeUnderflowError)):
        odekit.solve(decay, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="euler",
                     step_size=step, options={"max_num_steps": 10})


# bosh3's stage at the step end has weight 0, so it is exact at this jump even without perturb.
@pytest.mark.parametrize("method,exact_without", [("rk4", False), ("dopri5", False), ("bosh3", True)])
def test_perturb_samples_a_jump_at_a_grid_point_from_the_right_sides(method, exact_without):
    """f = 1 before t = 1 and 0 after, a grid point: with perturb every step sees one side only, so
    y(2) = ∫ f = 1 to round-off, also for first-same-as-last methods on a fixed grid."""
    def f(t, y):
        return torch.where(t < 1.0, torch.ones_like(y), torch.zeros_like(y))

    t = torch.tensor([0.0, 2.0], dtype=F64)
    on = odekit.solve(f, torch.zeros(1, dtype=F64), t, method=method, step_size=0.1, options={"perturb": True})
    assert on.ys[-1].item() == pytest.approx(1.0, abs=1e-12)
    off = odekit.solve(f, torch.zeros(1, dtype=F64), t, method=method, step_size=0.1)
    # Without it the stages at t = 1 see f's value after the jump in the step before it.
    assert (abs(off.ys[-1].item() - 1.0) < 1e-12) == exact_without


def test_fixed_grid_lands_on_its_points_exactly():
    ends = []

    def f(t, y):
        return -y

    f.callback_step = lambda t0, y0, dt: ends.append(float(t0))
    td.odeint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 3.0], dtype=F64), method="rk4",
              options={"step_size": 0.1})
    assert ends == [i * 0.1 for i in range(30)]
