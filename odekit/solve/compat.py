"""torchdiffeq-compatible front: ``odeint``, ``odeint_adjoint``, ``odeint_event``, ``odeint_dense``.

Same signatures, defaults (dopri5, rtol 1e-7, atol 1e-9), output layout and rules as
torchdiffeq, over :func:`~odekit.solve.api.solve`, so ``import odekit.torchdiffeq as torchdiffeq``
is the whole switch. Where torchdiffeq is more permissive than ``solve``, this front follows
torchdiffeq (docs/engine.md, "torchdiffeq compatibility"):

* ``t`` may have another float dtype (or device, with a warning) than ``y0``: it is converted to
  the state's real dtype, which is the dtype ``func`` sees its time in, as in torchdiffeq;
* options a method does not know are dropped with a warning instead of an error;
* step callbacks are read from attributes of ``func`` (``callback_step``,
  ``callback_accept_step``, ``callback_reject_step`` and their ``_adjoint`` forms); ones the
  method cannot call are dropped with a warning.

Counters are read with :func:`odekit.record_stats` instead of instrumenting ``func``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Sequence

import torch

from .api import solve
from .callbacks import StepCallbacks
from .errors import InvalidInputError, did_you_mean
from .methods import METHODS, on_fixed_grid
from .solution import DenseOutput
from .state import State, StateLayout

# torchdiffeq's callback attributes on func → StepCallbacks fields (the _adjoint forms add "_adjoint").
_CALLBACKS = {"callback_step": "step", "callback_accept_step": "accept", "callback_reject_step": "reject"}
_NOT_DIFFERENTIABLE = ("scipy_solver",)  # whole-interval solvers outside autograd


def _method(method: str | None) -> str:
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise InvalidInputError(f'Invalid method "{method}"{did_you_mean(str(method), METHODS)}. '
                                'Must be one of {"' + '", "'.join(METHODS) + '"}.')
    return method


def _options(method: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``options`` without the ones ``method`` does not take (torchdiffeq warns and goes on)."""
    options = dict(options or {})
    unknown = {k: options.pop(k) for k in list(options) if k not in METHODS[method].options}
    if unknown:
        suggestions = {k: did_you_mean(k, METHODS[method].options) for k in unknown}
        hints = "".join(f"; {k!r}{hint}" for k, hint in suggestions.items() if hint)
        warnings.warn(f"{method}: Unexpected arguments {unknown}{hints}", stacklevel=3)
    return options


def _callbacks(func, method: str, options: dict[str, Any], adjoint_method: str | None,
               adjoint_options: dict[str, Any] | None) -> StepCallbacks | None:
    """The step callbacks ``func`` carries as attributes, minus those the method cannot call."""

    def allowed(name: str, method: str, options: dict[str, Any]) -> bool:
        if method in _NOT_DIFFERENTIABLE:
            return False
        return name == "callback_step" or not on_fixed_grid(METHODS[method], options)

    found: dict[str, Any] = {}
    invalid = set()
    for name, field in _CALLBACKS.items():
        callback = getattr(func, name, None)
        if callable(callback):
            if allowed(name, method, options):
                found[field] = callback
            else:
                invalid.add(name)
        adjoint_callback = getattr(func, name + "_adjoint", None)
        if callable(adjoint_callback) and adjoint_method is not None and allowed(name, adjoint_method,
                                                                                 adjoint_options or {}):
            found[field + "_adjoint"] = adjoint_callback
    if invalid:
        warnings.warn(f"Solver '{method}' does not support callbacks {invalid}", stacklevel=3)
    return StepCallbacks(**found) if found else None


def _time(t: torch.Tensor, y0: State) -> torch.Tensor:
    """``t`` in the state's real dtype and on its device (torchdiffeq's promotion)."""
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"t must be a 1-D torch tensor of times, got {type(t).__name__}")
    layout = StateLayout.of(y0)
    if t.device != layout.device:
        warnings.warn("t is not on the same device as y0. Coercing to y0.device.", stacklevel=3)
    if not t.is_floating_point():
        raise InvalidInputError(f"`t` must be a floating point Tensor but is a {t.type()}")
    return t.to(device=layout.device, dtype=layout.real_dtype)


def _tolerance(name: str, value):
    if isinstance(value, torch.Tensor) and value.requires_grad:
        raise InvalidInputError(f"{name} cannot require gradient")
    return value


def _result(sol, t: torch.Tensor, event_fn):
    if event_fn is None:
        return sol.ys
    return sol.event_t.to(t.dtype), sol.ys


def odeint(
    func,
    y0: State,
    t: torch.Tensor,
    *,
    rtol: float | torch.Tensor = 1e-7,
    atol: float | torch.Tensor = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[torch.Tensor, State], torch.Tensor] | None = None,
):
    """Solve ``dy/dt = func(t, y)`` and return the states at ``t``, differentiable by backprop.

    With ``event_fn``, returns ``(event_t, ys)`` where ``ys`` holds the states at ``t[0]`` and
    at the event; the event time is differentiable.
    """
    method = _method(method)
    options = _options(method, options)
    callbacks = _callbacks(func, method, options, None, None)
    # scipy cannot be differentiated through: torchdiffeq returns its result detached, and so do we.
    with torch.no_grad() if method in _NOT_DIFFERENTIABLE else contextlib.nullcontext():
        sol = solve(func, y0, _time(t, y0), method=method, rtol=_tolerance("rtol", rtol),
                    atol=_tolerance("atol", atol), options=options, event_fn=event_fn, callbacks=callbacks)
    return _result(sol, t, event_fn)


def odeint_adjoint(
    func,
    y0: State,
    t: torch.Tensor,
    *,
    rtol: float | torch.Tensor = 1e-7,
    atol: float | torch.Tensor = 1e-9,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[torch.Tensor, State], torch.Tensor] | None = None,
    adjoint_rtol: float | torch.Tensor | None = None,
    adjoint_atol: float | torch.Tensor | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
):
    """Like :func:`odeint`, with gradients from the continuous adjoint (constant memory in steps)."""
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise InvalidInputError(
            "func must be an instance of nn.Module to specify the adjoint parameters; alternatively they can be "
            "specified explicitly via the `adjoint_params` argument. If there are no parameters then it is "
            "allowable to set `adjoint_params=()`."
        )
    if adjoint_method is not None and adjoint_method != method and options is not None and adjoint_options is None:
        raise InvalidInputError(
            "If `adjoint_method != method` then we cannot infer `adjoint_options` from `options`. So as `options` "
            "has been passed then `adjoint_options` must be passed as well."
        )
    method = _method(method)
    backward_method = _method(adjoint_method or method)
    options = _options(method, options)
    if adjoint_options is not None:
        norm = adjoint_options.get("norm")
        adjoint_options = _options(backward_method, {k: v for k, v in adjoint_options.items() if k != "norm"})
        if norm is not None:
            adjoint_options["norm"] = norm
    params = tuple(func.parameters()) if adjoint_params is None else tuple(adjoint_params)
    if adjoint_options and callable(adjoint_options.get("norm")) and any(not p.requires_grad for p in params):
        warnings.warn("An adjoint parameter was passed without requiring gradient. For efficiency this will be "
                      "excluded from the adjoint pass, and will not appear as a tensor in the adjoint norm.",
                      stacklevel=2)
    params = tuple(p for p in params if p.requires_grad)
    backward_options = adjoint_options if adjoint_options is not None else {k: v for k, v in options.items()
                                                                             if k != "norm"}
    callbacks = _callbacks(func, method, options, backward_method, backward_options)
    sol = solve(
        func, y0, _time(t, y0), method=method, rtol=_tolerance("rtol", rtol), atol=_tolerance("atol", atol),
        options=options, gradient="adjoint", adjoint_params=params, adjoint_method=backward_method,
        adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_options=adjoint_options, event_fn=event_fn,
        callbacks=callbacks,
    )
    return _result(sol, t, event_fn)


def odeint_event(func, y0: State, t0: torch.Tensor, *, event_fn, reverse_time: bool = False,
                 odeint_interface: Callable = odeint, **kwargs):
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero; returns ``(event_t, ys)``.

    ``ys`` holds the states at ``t0`` and at the event; gradients reach ``event_t`` through the
    implicit function theorem (``odeint`` and ``odeint_adjoint`` both provide them).
    """
    t0 = torch.as_tensor(t0).reshape(-1)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    return odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)


def odeint_dense(func, y0: State, t0: torch.Tensor, t1: torch.Tensor, *, rtol: float | torch.Tensor = 1e-7,
                 atol: float | torch.Tensor = 1e-9, method: str | None = None,
                 options: dict[str, Any] | None = None) -> DenseOutput:
    """Solve from ``t0`` to ``t1`` and return the dense solution: call it with times in between."""
    method = _method(method)
    options = _options(method, options)
    t0 = torch.as_tensor(t0)
    t = torch.stack([t0.reshape(()), torch.as_tensor(t1).to(t0).reshape(())])
    sol = solve(func, y0, _time(t, y0), method=method, rtol=_tolerance("rtol", rtol), atol=_tolerance("atol", atol),
                options=options, dense=True)
    return sol.dense
