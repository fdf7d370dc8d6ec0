"""The solve as objects (solver, controller, gradient method) against the short form they stand for."""

import pytest
import torch

import odekit
from odekit import InvalidInputError
from odekit.solve import spec


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()


Y0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
T = torch.linspace(0, 1, 4, dtype=torch.float64)

PAIRS = [
    (dict(method="tsit5", rtol=1e-6, atol=1e-8, options={"pcoeff": 0.3, "icoeff": 0.4}),
     dict(solver=spec.Tsit5(), controller=spec.PIController(rtol=1e-6, atol=1e-8, pcoeff=0.3, icoeff=0.4))),
    (dict(method="rk4", step_size=0.05), dict(solver=spec.RK4(), controller=spec.FixedGrid(0.05))),
    (dict(method="dopri5", rtol=1e-5, atol=1e-7, options={"first_step": 0.01, "max_step": 0.2}),
     dict(solver=spec.Dopri5(), controller=spec.PIController(rtol=1e-5, atol=1e-7, first_step=0.01, max_step=0.2))),
    (dict(method="implicit_adams", rtol=1e-6, atol=1e-8, options={"max_order": 4}),
     dict(solver=spec.ImplicitAdams(options={"max_order": 4}), controller=spec.PIController(rtol=1e-6, atol=1e-8))),
    (dict(method="prox_bdf", rtol=1e-5, atol=1e-7, options={"order": 3, "inner_memory": 10}),
     dict(solver=spec.ProxBDF(order=3, inner=spec.LBFGS(memory=10)), controller=spec.PIController(rtol=1e-5,
                                                                                                 atol=1e-7))),
    (dict(method="prox_cn", step_size=0.1, options={"inner": "fr", "inner_step": 0.3, "inner_res_tol": 1e-8}),
     dict(solver=spec.Proximal("prox_cn", inner=spec.FletcherReeves(step=0.3, res_tol=1e-8)),
          controller=spec.FixedGrid(0.1))),
]


@pytest.mark.parametrize("short,objects", PAIRS)
def test_objects_and_strings_take_the_same_steps(short, objects):
    net = _net()
    a = odekit.solve(lambda s, y: net(y), Y0, T, **short)
    b = odekit.solve(lambda s, y: net(y), Y0, T, **objects)
    assert torch.equal(a.ys, b.ys)
    assert (a.stats.nfe, a.stats.steps_accepted, a.stats.steps_rejected, a.stats.extra) == (
        b.stats.nfe, b.stats.steps_accepted, b.stats.steps_rejected, b.stats.extra)


@pytest.mark.parametrize("short,objects", [
    (lambda p: dict(gradient="adjoint", adjoint_params=p), lambda p: dict(gradient=spec.BacksolveAdjoint(params=p))),
    (lambda p: dict(gradient="adjoint", adjoint_params=p, adjoint_options={"norm": "seminorm"}),
     lambda p: dict(gradient=spec.BacksolveAdjoint(seminorm=True, params=p))),
    (lambda p: dict(gradient="adjoint", adjoint_params=p, adjoint_method="tsit5", adjoint_rtol=1e-8,
                    adjoint_atol=1e-10, adjoint_options={}),
     lambda p: dict(gradient=spec.BacksolveAdjoint(solver=spec.Tsit5(), controller=spec.PIController(
         rtol=1e-8, atol=1e-10), params=p))),
    (lambda p: dict(gradient="checkpoint", adjoint_params=p), lambda p: dict(gradient=spec.RecursiveCheckpoint(p))),
    (lambda p: dict(gradient="backprop"), lambda p: dict(gradient=spec.Backprop())),
])
def test_gradient_objects_match_the_strings(short, objects):
    results = []
    for form in (short, objects):
        net = _net()
        sol = odekit.solve(lambda s, y: net(y), Y0, T, rtol=1e-6, atol=1e-8, **form(tuple(net.parameters())))
        sol.ys.pow(2).sum().backward()
        results.append((sol.stats.nfe_backward, [p.grad for p in net.parameters()]))
    (nfe_a, grads_a), (nfe_b, grads_b) = results
    assert nfe_a == nfe_b > 0
    for a, b in zip(grads_a, grads_b):
        assert torch.equal(a, b)


def test_objects_and_short_form_options_exclude_each_other():
    with pytest.raises(InvalidInputError, match="not both"):
        odekit.solve(lambda s, y: -y, Y0, T, solver=spec.Dopri5(), controller=spec.PIController(rtol=1e-3, atol=1e-6,
                                                                                                 safety=0.8),
                     options={"max_num_steps": 10})
    with pytest.raises(InvalidInputError, match="controller must be"):
        odekit.solve(lambda s, y: -y, Y0, T, controller="pid")
    with pytest.raises(InvalidInputError, match="solver must be a Solver"):
        odekit.solve(lambda s, y: -y, Y0, T, solver="dopri5")
    with pytest.raises(InvalidInputError, match="unknown inner solver 'lbgfs'.*did you mean 'lbfgs'"):
        spec.Proximal(inner=spec.InnerSolver("lbgfs"))


def test_a_controller_object_is_reusable():
    """Controllers keep their state in the loop, not in themselves: one object serves any number of solves."""
    controller = spec.PIController(rtol=1e-6, atol=1e-8, pcoeff=0.3, icoeff=0.4)
    runs = [odekit.solve(lambda s, y: -y * torch.cos(s), Y0, T, controller=controller) for _ in range(3)]
    assert all(torch.equal(r.ys, runs[0].ys) and r.stats.nfe == runs[0].stats.nfe for r in runs)


def test_models_take_one_settings_value_or_its_fields():
    from odekit.models.block import ODEBlock
    from odekit.solve.spec import SolveSettings

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2).double()

        def forward(self, t, y):
            return torch.tanh(self.linear(y))

    torch.manual_seed(0)
    field = Field()
    by_keywords = ODEBlock(field, method="tsit5", rtol=1e-6, atol=1e-8, gradient="checkpoint")
    by_value = ODEBlock(field, settings=SolveSettings(solver=spec.Tsit5(), controller=spec.PIController(
        rtol=1e-6, atol=1e-8), gradient=spec.RecursiveCheckpoint()))
    assert torch.equal(by_keywords(Y0), by_value(Y0)) and by_keywords.stats.nfe == by_value.stats.nfe
    by_keywords.rtol = 1e-3  # the fields read and write as attributes
    assert by_keywords.settings.rtol == 1e-3 and by_keywords.rtol == 1e-3
    with pytest.raises(InvalidInputError, match="unknown solve setting.*'rtoll'.*did you mean 'rtol'"):
        ODEBlock(field, rtoll=1e-3)
    with pytest.raises(InvalidInputError, match="not both"):
        ODEBlock(field, settings=SolveSettings(), rtol=1e-3)


def test_pid_controller_follows_soderlinds_law_with_its_state_passed_through():
    from odekit.solve.controller import PIState

    controller = spec.PIController(rtol=1e-6, atol=1e-9, pcoeff=0.2, icoeff=0.3, dcoeff=0.1, ifactor=100.0)
    state = PIState(order=5)
    ratios, h = [0.5, 0.2, 0.8], 0.1
    for ratio in ratios:
        accept, h_next, new_state = controller.adapt(state, h, ratio)
        expected = 0.9 * ratio ** (-0.6 / 5) * state.previous_ratio ** (0.4 / 5) * state.earlier_ratio ** (-0.1 / 5)
        assert accept and h_next == pytest.approx(h * max(expected, 1.0))
        assert (new_state.previous_ratio, new_state.earlier_ratio) == (ratio, state.previous_ratio)
        state = new_state
    sol = odekit.solve(lambda s, y: -y * torch.cos(3 * s), Y0, T, rtol=1e-8, atol=1e-10,
                       options={"pcoeff": 0.2, "icoeff": 0.3, "dcoeff": 0.1})
    exact = Y0 * torch.exp(-torch.sin(3 * T)[:, None, None] / 3)
    assert torch.allclose(sol.ys, exact, rtol=1e-6)
