"""Classical initial value problems with exact solutions or trusted references.

Used by the ``work_precision`` experiment, the tests and the benchmarks. States are float64
tensors; ``reference`` gives the exact solution where there is one, otherwise scipy's DOP853
at rtol = atol = 1e-13.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ODEProblem:
    name: str
    title: str
    f: Field
    y0: torch.Tensor
    t_end: float
    exact: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def times(self, n: int) -> torch.Tensor:
        return torch.linspace(0.0, self.t_end, n, dtype=torch.float64)

    def reference(self, t: torch.Tensor) -> torch.Tensor:
        """The solution at ``t`` (shape ``(len(t), *y0.shape)``)."""
        if self.exact is not None:
            return self.exact(t, self.y0)
        return scipy_solution(self.f, self.y0, t)


def scipy_solution(f: Field, y0: torch.Tensor, t: torch.Tensor, rtol: float = 1e-13) -> torch.Tensor:
    """``f`` integrated by scipy's DOP853 at tight tolerance, on float64 copies."""
    y0 = y0.detach().to(torch.float64)

    def rhs(tt: float, yy: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = f(torch.tensor(tt, dtype=torch.float64), torch.from_numpy(yy).view(y0.shape))
        return out.reshape(-1).numpy()

    t_np = t.detach().to(torch.float64).numpy()
    sol = solve_ivp(rhs, (t_np[0], t_np[-1]), y0.reshape(-1).numpy(), method="DOP853", t_eval=t_np,
                    rtol=rtol, atol=rtol)
    if not sol.success:
        raise RuntimeError(f"scipy reference solve failed: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y.T)).reshape(len(t_np), *y0.shape)


def van_der_pol(t: torch.Tensor, y: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], dim=-1)


def lotka_volterra(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([1.5 * y[..., 0] - y[..., 0] * y[..., 1], -3.0 * y[..., 1] + y[..., 0] * y[..., 1]], dim=-1)


def oscillator(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x'' = −x`` as a first-order system."""
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def oscillator_exact(t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    return torch.cat([c * y0[0] + s * y0[1], -s * y0[0] + c * y0[1]], dim=1)


def random_mlp_field(seed: int = 0, dim: int = 2, width: int = 32) -> Field:
    """A random tanh MLP vector field, as a freshly initialised neural ODE would have."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(width, dim, generator=gen, dtype=torch.float64) / dim**0.5
    b1 = torch.randn(width, generator=gen, dtype=torch.float64) * 0.1
    w2 = torch.randn(dim, width, generator=gen, dtype=torch.float64) / width**0.5

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ w1.T + b1) @ w2.T

    return field


def problems(seed: int = 0) -> dict[str, ODEProblem]:
    """The work–precision problem set, by name."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "van_der_pol": ODEProblem("van_der_pol", "Van der Pol (μ = 1)", van_der_pol,
                                  torch.tensor([2.0, 0.0], dtype=torch.float64), 10.0),
        "lotka_volterra": ODEProblem("lotka_volterra", "Lotka–Volterra", lotka_volterra,
                                     torch.tensor([1.0, 1.0], dtype=torch.float64), 10.0),
        "oscillator": ODEProblem("oscillator", "linear oscillator (exact solution)", oscillator,
                                 torch.tensor([1.0, 0.0], dtype=torch.float64), 10.0, exact=oscillator_exact),
        "mlp": ODEProblem("mlp", "random MLP field 2-32-2, batch 16", random_mlp_field(seed),
                          torch.randn(16, 2, generator=gen, dtype=torch.float64), 5.0),
    }
