"""The table of built-in methods: every family's methods by name, in one place.

The families define their methods as tuples (:data:`~odekit.solve.methods.RUNGE_KUTTA_METHODS`,
:data:`~odekit.solve.adams.ADAMS_METHODS`, …) without registering anything when imported; this
table collects them into :data:`~odekit.solve.methods.METHODS`, which ``solve``, ``odeint`` and
``odekit methods`` read. :func:`~odekit.solve.methods.register_method` adds methods of your own.
"""

from __future__ import annotations

from .adams import ADAMS_METHODS
from .auto import AUTO_METHODS
from .bdf import BDF_METHODS
from .implicit_rk import IMPLICIT_RK_METHODS
from .methods import METHODS, RUNGE_KUTTA_METHODS
from .proximal import PROXIMAL_METHODS
from .scipy_solver import SCIPY_METHODS

BUILTIN_FAMILIES = {
    "explicit Runge–Kutta": RUNGE_KUTTA_METHODS,
    "Adams multistep": ADAMS_METHODS,
    "implicit Runge–Kutta": IMPLICIT_RK_METHODS,
    "stiff BDF/NDF (variable order)": BDF_METHODS,
    "automatic stiffness switching": AUTO_METHODS,
    "proximal implicit (thesis ch. 5)": PROXIMAL_METHODS,
    "scipy": SCIPY_METHODS,
}

METHODS.update({method.name: method for family in BUILTIN_FAMILIES.values() for method in family})
