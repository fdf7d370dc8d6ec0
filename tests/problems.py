"""Test problems with exact solutions or trusted references, shared by the engine tests."""

import numpy as np
import torch
from scipy.integrate import solve_ivp


def oscillator(t, y):
    """y'' = -y as a first-order system; exact solution cos/sin."""
    return torch.stack([y[..., 1], -y[..., 0]], dim=-1)


def oscillator_exact(t, y0):
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    return torch.cat([c * y0[0] + s * y0[1], -s * y0[0] + c * y0[1]], dim=1)


def decay(t, y):
    """Non-autonomous linear ODE y' = -2 t y with exact solution y0 exp(-t²) (for t0 = 0)."""
    return -2 * t * y


def van_der_pol(t, y, mu=1.0):
    return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], dim=-1)


def lotka_volterra(t, y):
    return torch.stack([1.5 * y[..., 0] - y[..., 0] * y[..., 1], -3.0 * y[..., 1] + y[..., 0] * y[..., 1]], dim=-1)


def scipy_reference(f, y0, t):
    """DOP853 at rtol 1e-13 through scipy: the reference for problems without a closed form."""
    def rhs(tt, yy):
        return f(torch.tensor(tt, dtype=torch.float64), torch.from_numpy(yy).view(y0.shape)).reshape(-1).numpy()

    t_np = t.numpy()
    sol = solve_ivp(rhs, (t_np[0], t_np[-1]), y0.reshape(-1).numpy(), method="DOP853", t_eval=t_np, rtol=1e-13, atol=1e-13)
    assert sol.success
    return torch.from_numpy(np.ascontiguousarray(sol.y.T)).reshape(len(t_np), *y0.shape)
