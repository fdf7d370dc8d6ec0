"""torchdiffeq's public interface on odekit's engine: ``import odekit.torchdiffeq as torchdiffeq``.

The same names, arguments, defaults and output layout as torchdiffeq 0.2.5 (``odeint``,
``odeint_adjoint``, ``odeint_event``, ``odeint_dense``), with its method names and options.
See docs/engine.md, "torchdiffeq compatibility", for what differs.
"""

from .solve.compat import odeint, odeint_adjoint, odeint_dense, odeint_event

__all__ = ["odeint", "odeint_adjoint", "odeint_event", "odeint_dense"]
