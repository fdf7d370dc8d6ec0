"""Bad inputs found by probing (issue 20): each fails at once with a specific message, or is accepted."""

import math
import warnings

import numpy as np
import pytest
import torch

import odekit
import odekit.torchdiffeq as td
from odekit import InvalidInputError, MaxStepsExceededError, VectorFieldError
from odekit.solve.controller import PIController
from odekit.solve.errors import did_you_mean
from odekit.solve.methods import DEFAULT_MAX_FIXED_STEPS, DEFAULT_MAX_STEPS, METHODS, resolve, step_caps

F64 = torch.float64
Y0 = torch.tensor([1.0, 0.0], dtype=F64)
T = torch.tensor([0.0, 1.0], dtype=F64)


def rotate(t, y):
    return torch.stack([y[1], -y[0]])


class Counted:
    """``rotate``, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, t, y):
        self.calls += 1
        return rotate(t, y)


# --- 1. controller options that loop, and the step caps -----------------------------------------

@pytest.mark.parametrize("options,match", [
    # a step cap, so that a controller that does loop fails this test quickly instead of hanging
    ({"pcoeff": -1.0, "max_num_steps": 1000}, "pcoeff ≥ 0"),
    ({"dfactor": 1.0, "max_num_steps": 1000}, "0 < dfactor < 1"),
    ({"dfactor": 0.0}, "0 < dfactor < 1"),
    ({"icoeff": 0.0}, "icoeff > 0"),
    ({"safety": 1.5}, "0 < safety ≤ 1"),
    ({"safety": 0.0}, "0 < safety ≤ 1"),
    ({"ifactor": 0.5}, "ifactor ≥ 1"),
    ({"first_step": math.inf}, "first_step > 0"),
    ({"max_step": 0.0}, "max_step > 0"),
    ({"min_step": -1.0}, "min_step ≥ 0"),
    ({"min_step": 0.5, "max_step": 0.1}, "min_step ≤ max_step"),
])
def test_controller_options_outside_their_range_are_refused(options, match):
    with pytest.raises(InvalidInputError, match=match):
        odekit.solve(rotate, Y0, T, options=options)


@pytest.mark.parametrize("safety", [0.5, 0.9, 1.0])
@pytest.mark.parametrize("pcoeff,icoeff", [(0.0, 1.0), (0.3, 0.4), (2.0, 0.01)])
@pytest.mark.parametrize("dfactor", [0.2, 0.95])
@pytest.mark.parametrize("ratio", [1.0 + 1e-15, 1.5, 1e6])
def test_a_rejected_step_always_shrinks(safety, pcoeff, icoeff, dfactor, ratio):
    controller = PIController(rtol=1e-6, atol=1e-9, safety=safety, pcoeff=pcoeff, icoeff=icoeff, dfactor=dfactor)
    from odekit.solve.controller import PIState

    # a previous accepted step with a small error (it raises the PI factor)
    _, _, state = controller.adapt(PIState(order=1), 0.1, 1e-3)
    for h in (0.1, -0.1):
        accept, h_next, _ = controller.adapt(state, h, ratio)
        assert not accept
        assert math.copysign(1.0, h_next) == math.copysign(1.0, h)
        assert abs(h_next) <= max(dfactor, 0.9) * abs(h)


def test_default_step_caps_depend_on_whether_the_grid_is_fixed():
    assert (DEFAULT_MAX_STEPS, DEFAULT_MAX_FIXED_STEPS) == (100_000, 10**7)
    assert step_caps(resolve("dopri5", {})[1]) == (DEFAULT_MAX_STEPS, 2**31 - 1)
    assert step_caps(resolve("rk4", {})[1])[0] == DEFAULT_MAX_FIXED_STEPS
    assert step_caps(resolve("dopri5", {"step_size": 0.1})[1])[0] == DEFAULT_MAX_FIXED_STEPS
    assert step_caps(resolve("prox_bdf", {})[1])[0] == DEFAULT_MAX_STEPS
    assert step_caps(resolve("dopri5", {"max_num_steps": 7})[1])[0] == 7


def test_the_step_cap_message_says_how_to_raise_it():
    with pytest.raises(MaxStepsExceededError, match=r"max_num_steps=10 .*options=\{'max_num_steps': 100\}"):
        odekit.solve(rotate, Y0, torch.tensor([0.0, 50.0], dtype=F64), options={"max_num_steps": 10})


@pytest.mark.parametrize("kwargs,steps", [
    ({"method": "euler", "step_size": 0.01}, 100),
    ({"method": "dopri5", "step_size": 0.01}, 100),
    ({"method": "rk4", "step_size": 0.001, "t": torch.tensor([1.0, 0.0], dtype=F64)}, 1000),
    ({"method": "rk4", "t": torch.linspace(0, 1, 21, dtype=F64)}, 20),
    ({"method": "euler", "options": {"grid_constructor": lambda f, y0, t: torch.linspace(0, 1, 31)}}, 30),
])
def test_a_fixed_grid_longer_than_the_cap_fails_before_the_first_step(kwargs, steps):
    f = Counted()
    kwargs = dict(kwargs)
    t = kwargs.pop("t", T)
    options = {**kwargs.pop("options", {}), "max_num_steps": 10}
    with pytest.raises(MaxStepsExceededError, match=rf"takes {steps} steps, more than max_num_steps=10.*"
                                                    rf"options=\{{'max_num_steps': {steps}\}}"):
        odekit.solve(f, Y0, t, options=options, **kwargs)
    assert f.calls <= 1  # no step taken: at most f(t0, y0), which first-same-as-last methods evaluate first
    # At the cap itself it runs.
    odekit.solve(f, Y0, t, options={**options, "max_num_steps": steps}, **kwargs)


def test_a_fixed_step_too_small_to_count_fails_at_once():
    with pytest.raises(MaxStepsExceededError, match="more steps than a float can count"):
        odekit.solve(rotate, Y0, T, method="euler", step_size=5e-324)


def test_a_fixed_grid_beyond_the_default_cap_fails_at_once_and_throw_false_reports_it():
    t = torch.tensor([0.0, 1000.0], dtype=F64)
    with pytest.raises(MaxStepsExceededError, match="takes 100000000 steps, more than max_num_steps=10000000"):
        odekit.solve(rotate, Y0, t, method="euler", step_size=1e-5)
    sol = odekit.solve(rotate, Y0, t, method="euler", step_size=1e-5, throw=False)
    assert sol.status == "max_steps_exceeded" and torch.isnan(sol.ys[-1]).all()


# --- 2. wrong-typed options and norms -----------------------------------------------------------

@pytest.mark.parametrize("kwargs,name,shown", [
    ({"method": "rk4", "step_size": "0.1"}, "step_size", "'0.1' of type str"),
    ({"options": {"safety": "x"}}, "safety", "'x' of type str"),
    ({"options": {"first_step": [0.1]}}, "first_step", r"\[0.1\] of type list"),
    ({"options": {"ifactor": None, "dfactor": "0.5"}}, "dfactor", "'0.5' of type str"),
    ({"options": {"pcoeff": math.nan, "max_num_steps": 1000}}, "pcoeff", "nan of type float"),
    ({"options": {"max_step": "inf"}}, "max_step", "'inf' of type str"),
    ({"options": {"max_num_steps": 1e5}}, "max_num_steps", "100000.0 of type float"),
    ({"options": {"max_nfe": True}}, "max_nfe", "True of type bool"),
    ({"method": "prox_be", "step_size": 0.1, "options": {"inner_tol": "1e-6"}}, "inner_tol", "'1e-6' of type str"),
    ({"method": "prox_be", "step_size": 0.1, "options": {"krylov_dim": 2.5}}, "krylov_dim", "2.5 of type float"),
    ({"method": "prox_be", "step_size": 0.1, "options": {"inner_step": -1}}, "inner_step", "-1 of type int"),
    ({"method": "fixed_adams", "step_size": 0.1, "options": {"max_order": "4"}}, "max_order", "'4' of type str"),
])
def test_wrong_typed_options_name_the_option_the_value_and_its_type(kwargs, name, shown):
    with pytest.raises(InvalidInputError, match=rf"option {name} must be .*got {shown}"):
        odekit.solve(rotate, Y0, T, **kwargs)


def test_numeric_options_accept_numpy_numbers_and_one_element_tensors():
    reference = odekit.solve(rotate, Y0, T, method="rk4", step_size=0.1).ys
    for step in (np.float32(0.1), np.float64(0.1), np.array(0.1), torch.tensor(0.1)):
        ys = odekit.solve(rotate, Y0, T, method="rk4", step_size=step).ys
        assert torch.allclose(ys, reference, atol=1e-7)
    odekit.solve(rotate, Y0, T, options={"safety": np.float32(0.8), "max_num_steps": np.int64(1000),
                                         "max_step": math.inf, "first_step": torch.tensor(0.01)})


def test_a_numeric_option_set_to_none_takes_its_default():
    reference = odekit.solve(rotate, Y0, T)
    sol = odekit.solve(rotate, Y0, T, options={k: None for k in ("safety", "ifactor", "dfactor", "pcoeff", "icoeff",
                                                                  "min_step", "max_step", "first_step",
                                                                  "max_num_steps", "max_nfe")})
    assert torch.equal(sol.ys, reference.ys)
    assert step_caps(resolve("rk4", {"max_num_steps": None})[1])[0] == DEFAULT_MAX_FIXED_STEPS


@pytest.mark.parametrize("norm,returned", [
    (lambda y: (y.abs().max(), y.abs().min()), "a tuple of length 2"),
    (lambda y: y.abs(), r"a tensor of shape \(2,\)"),
    (lambda y: "small", "a str"),
    (lambda y: y.abs().max() + 0j, r"a tensor of shape \(\) and dtype torch.complex128"),
])
def test_a_norm_that_does_not_return_one_number_is_reported(norm, returned):
    with pytest.raises(InvalidInputError, match=f"option norm must return one real number.*returned {returned}"):
        odekit.solve(rotate, Y0, T, options={"norm": norm})


def test_a_norm_may_return_a_python_number_or_a_one_element_tensor():
    for norm in (lambda y: float(y.abs().max()), lambda y: y.abs().max().reshape(1)):
        sol = odekit.solve(rotate, Y0, T, options={"norm": norm})
        assert torch.allclose(sol.ys[-1], torch.tensor([math.cos(1.0), -math.sin(1.0)], dtype=F64), atol=1e-6)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "prox_bdf"])
def test_a_nan_norm_is_blamed_on_the_norm_not_on_f(method):
    with pytest.raises(InvalidInputError, match="norm.*returned NaN for a finite input") as info:
        odekit.solve(rotate, Y0, T, method=method, options={"norm": lambda y: y.abs().max() * math.nan})
    assert "diverges" not in str(info.value)


def test_a_norm_that_turns_nan_mid_solve_is_blamed_on_the_norm():
    calls = [0]

    def norm(y):
        calls[0] += 1
        return y.abs().max() * (math.nan if calls[0] > 10 else 1.0)

    with pytest.raises(InvalidInputError, match="norm.*returned NaN"):
        odekit.solve(rotate, Y0, T, options={"norm": norm})


def test_a_state_norm_in_an_adjoint_solve_without_parameters():
    y0 = Y0.clone().requires_grad_()
    sol = odekit.solve(lambda t, y: -y, y0, T, gradient="adjoint", adjoint_params=(),
                       options={"norm": lambda y: y.abs().max()})
    sol.ys[-1].sum().backward()
    assert torch.allclose(y0.grad, torch.full((2,), math.exp(-1.0), dtype=F64), atol=1e-6)


# --- 3. misleading messages ----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dopri5", "rk4"])
@pytest.mark.parametrize("y0,shape", [
    (torch.zeros(0, 3, dtype=F64), r"shape \(0, 3\)"),
    ((torch.zeros(0, dtype=F64), torch.zeros(2, 0, dtype=F64)), r"shapes \(0,\), \(2, 0\)"),
])
def test_an_empty_state_is_an_input_error_not_a_diverging_field(y0, shape, method):
    with pytest.raises(InvalidInputError, match=f"y0 has no entries \\({shape}\\)"):
        odekit.solve(lambda t, y: y, y0, T, method=method)


@pytest.mark.parametrize("method,step_size,error", [("dopri5", None, 1e-6), ("rk4", 0.01, 1e-6),
                                                    ("prox_be", 0.001, 1e-3)])
def test_a_tuple_state_with_an_empty_component_solves(method, step_size, error):
    y0 = (Y0, torch.zeros(0, 4, dtype=F64))
    sol = odekit.solve(lambda t, s: (rotate(t, s[0]), -s[1]), y0, T, method=method, step_size=step_size)
    assert sol.ys[1].shape == (2, 0, 4)
    assert torch.allclose(sol.ys[0][-1], torch.tensor([math.cos(1.0), -math.sin(1.0)], dtype=F64), atol=error)


class Sub(torch.Tensor):
    pass


def test_a_tensor_subclass_returned_by_f_counts_as_a_tensor():
    reference = odekit.solve(rotate, Y0, T)
    sol = odekit.solve(lambda t, y: rotate(t, y).as_subclass(Sub), Y0, T)
    assert type(sol.ys) is torch.Tensor
    assert torch.equal(sol.ys, reference.ys) and sol.stats.nfe == reference.stats.nfe
    pair = odekit.solve(lambda t, s: (rotate(t, s[0]).as_subclass(Sub), -s[1]), (Y0, Y0), T)
    assert type(pair.ys[0]) is torch.Tensor


def test_a_parameter_returned_by_f_gets_its_gradient():
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=F64))
    sol = odekit.solve(lambda t, y: w.as_subclass(Sub) * 1.0 + 0 * y, Y0, T, method="rk4", step_size=0.5)
    sol.ys[-1].sum().backward()
    assert torch.allclose(w.grad, torch.ones(2, dtype=F64))


@pytest.mark.parametrize("rtol", [np.float32(1e-5), np.float64(1e-5), np.int64(1), np.array(1e-5),
                                  torch.tensor(1e-5)])
def test_numpy_tolerances_are_numbers(rtol):
    sol = odekit.solve(rotate, Y0, T, rtol=rtol, atol=np.float32(1e-8))
    assert sol.ok
    td.odeint(rotate, Y0, T, rtol=rtol, atol=1e-8)


@pytest.mark.parametrize("rtol,shown", [
    (torch.tensor([]), "of type Tensor"),
    (np.array([1e-5, 1e-6]), "of type ndarray"),
    ("1e-5", "of type str"),
    (True, "of type bool"),
])
def test_tolerances_that_are_not_one_number_are_reported(rtol, shown):
    with pytest.raises(InvalidInputError, match=f"rtol must be a positive finite number, got .*{shown}"):
        odekit.solve(rotate, Y0, T, rtol=rtol)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_f_returning_a_tensor_on_another_device_names_the_devices(method):
    """The meta device stands in for a GPU."""
    with pytest.raises(VectorFieldError, match=r"returned tensor of shape \(2,\) .* on meta, .* on cpu.*device=y"):
        odekit.solve(lambda t, y: rotate(t, y).to("meta"), Y0, T, method=method)
    with pytest.raises(VectorFieldError, match=r"on meta.*on cpu"):
        odekit.solve(lambda t, s: (s[1], s[0].to("meta")), (Y0, Y0), T, method=method)


def test_a_shape_mismatch_message_leaves_the_devices_out():
    with pytest.raises(VectorFieldError) as info:
        odekit.solve(lambda t, y: y[:1], Y0, T)
    assert " on cpu" not in str(info.value)


# --- 4. did you mean ----------------------------------------------------------------------------

def test_did_you_mean():
    assert did_you_mean("dopri55", METHODS) == " (did you mean 'dopri5'?)"
    assert did_you_mean("RK4", METHODS) == " (did you mean 'rk4'?)"
    assert did_you_mean("radauiia5", METHODS) == " (did you mean 'radauIIA5'?)"
    assert did_you_mean("zzzzzz", METHODS) == ""
    assert did_you_mean("x", []) == ""


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "dopri55"}, r"unknown method 'dopri55' \(did you mean 'dopri5'\?\); valid methods: "),
    ({"options": {"safty": 0.5}}, r"unknown option\(s\) 'safty' \(did you mean 'safety'\?\) for method"),
    ({"options": {"safty": 0.5, "zzzzzz": 1}}, r"'safty' \(did you mean 'safety'\?\), 'zzzzzz' for method"),
    ({"method": "prox_be", "step_size": 0.1, "options": {"inner": "lbgfs"}},
     r"unknown inner solver 'lbgfs' \(did you mean 'lbfgs'\?\); choose one of"),
    ({"method": "prox_bdf", "options": {"inner": "Newton"}}, r"did you mean 'newton'\?"),
])
def test_unknown_names_suggest_the_closest_valid_one(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        odekit.solve(rotate, Y0, T, **kwargs)


def test_the_torchdiffeq_front_suggests_names_too():
    with pytest.raises(InvalidInputError, match=r"Invalid method \"dopri55\" \(did you mean 'dopri5'\?\)\. Must be"):
        td.odeint(rotate, Y0, T, method="dopri55")
    with pytest.warns(UserWarning, match=r"Unexpected arguments \{'safty': 0.5\}; 'safty' \(did you mean 'safety'\?\)"):
        td.odeint(rotate, Y0, T, options={"safty": 0.5})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        td.odeint(rotate, Y0, T, options={"zzzzzz": 0.5})
    assert [str(w.message) for w in caught] == ["dopri5: Unexpected arguments {'zzzzzz': 0.5}"]
