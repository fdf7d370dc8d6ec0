"""Terminal events: stop a solve where an event function crosses zero, with the event time's gradient.

An event function ``g(t, y)`` returns a tensor of any shape; each entry is an event. As in
torchdiffeq, the entries are first made positive at the start (multiplied by their initial
signs) and combined by their minimum, so the solve stops at the first entry to change sign.

Gradients of the event time follow from the implicit function theorem. The event time ``t*``
solves ``g(t*, y(t*; θ)) = 0``, so for anything ``θ`` the trajectory depends on (``y0``, the
parameters of ``f``, ``t0``)

    dt*/dθ = −(∂g/∂y · ∂y/∂θ) / (∂g/∂t + ∂g/∂y · f(t*, y*)),

and a loss ``L(t*, y*)`` gets ``dL/dθ = ∂L/∂y* · ∂y/∂θ + (∂L/∂t* + ∂L/∂y* · f) dt*/dθ``.
:class:`EventGradient` adds the second term by rerouting it through the state: in the backward
pass the state's cotangent becomes ``∂L/∂y* − (∂L/∂t* + ∂L/∂y*·f) / (dg/dt) · ∂g/∂y``, and the
solve's own gradient (backprop or adjoint, at the fixed time ``t*``) carries it back.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import InvalidInputError
from .integrate import Event
from .state import State, StateLayout

EventFunction = Callable[[torch.Tensor, State], torch.Tensor]


def combine(event_fn: EventFunction, t0: torch.Tensor, y0: State) -> Callable[[torch.Tensor, State], torch.Tensor]:
    """One scalar event function, positive at the start, from ``event_fn``'s entries."""
    with torch.no_grad():
        start = event_fn(t0, y0)
    if not isinstance(start, torch.Tensor):
        raise InvalidInputError(f"event_fn(t, y) must return a tensor, got {type(start).__name__}")
    if start.is_complex():
        raise InvalidInputError("event_fn(t, y) must return real values (take .real or .abs() of a complex state)")
    signs = torch.sign(start.detach())

    def combined(t: torch.Tensor, y: State) -> torch.Tensor:
        return (event_fn(t, y) * signs).min()

    return combined


def loop_event(combined: Callable[[torch.Tensor, State], torch.Tensor], layout: StateLayout,
               t_dtype: torch.dtype, tol: float) -> Event:
    """The loop's view of ``combined``: float times and flat states in, a float out."""

    def fn(t: float, y: torch.Tensor) -> float:
        return float(combined(torch.tensor(t, dtype=t_dtype, device=y.device), layout.unflatten(y)))

    return Event(fn, tol)


class EventGradient(torch.autograd.Function):
    """``(t*, y*) ↦ (t*, y*)`` whose backward adds the event time's dependence on ``y*``'s inputs."""

    @staticmethod
    def forward(ctx, spec, event_t: torch.Tensor, state: torch.Tensor):
        ctx.spec = spec
        ctx.save_for_backward(event_t, state)
        return event_t.detach().clone(), state.view_as(state)

    @staticmethod
    def backward(ctx, grad_t: torch.Tensor | None, grad_state: torch.Tensor | None):
        field, combined, layout = ctx.spec
        event_t, state = ctx.saved_tensors
        grad_t = torch.zeros_like(event_t) if grad_t is None else grad_t
        grad_state = torch.zeros_like(state) if grad_state is None else grad_state
        with torch.enable_grad():
            t = event_t.detach().requires_grad_(True)
            y = state.detach().requires_grad_(True)
            g = combined(t, layout.unflatten(y))
            dg_dt, dg_dy = torch.autograd.grad(g, (t, y), allow_unused=True)
        dg_dt = torch.zeros_like(t) if dg_dt is None else dg_dt
        dg_dy = torch.zeros_like(y) if dg_dy is None else dg_dy
        with torch.no_grad():
            slope = field(float(event_t), state.detach())
            # Directional derivatives along f; PyTorch's complex cotangents are conjugated.
            total_t = grad_t + (grad_state.conj() * slope).sum().real.to(grad_t.dtype)
            rate = dg_dt + (dg_dy.conj() * slope).sum().real.to(dg_dt.dtype)
            if float(rate.abs()) == 0.0:
                raise InvalidInputError(
                    "the event function does not change along the solution at the event (dg/dt = 0), so the "
                    "event time has no derivative; use an event function that crosses zero transversally"
                )
            rerouted = grad_state - dg_dy * (total_t / rate).to(dg_dy.dtype)
        return None, None, rerouted
