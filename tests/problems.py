"""Test problems shared by the engine tests: the library's own problem set, plus one more."""

from odekit.data.ode_problems import lotka_volterra, oscillator, oscillator_exact, van_der_pol
from odekit.data.ode_problems import scipy_solution as scipy_reference


def decay(t, y):
    """Non-autonomous linear ODE y' = -2 t y with exact solution y0 exp(-t²) (for t0 = 0)."""
    return -2 * t * y


__all__ = ["decay", "lotka_volterra", "oscillator", "oscillator_exact", "scipy_reference", "van_der_pol"]
