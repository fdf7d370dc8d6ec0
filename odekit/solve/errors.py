"""Exceptions raised by the solver engine.

Every failure the engine detects raises a subclass of :class:`SolverError`, with a message that
names what was wrong and how to fix it, so that a bad call never returns silent garbage.
"""

from __future__ import annotations


class SolverError(RuntimeError):
    """Base class of every error raised by :mod:`odekit.solve`."""


class InvalidInputError(SolverError, ValueError):
    """``y0``, ``t``, the tolerances, the method or the options are not usable as given."""


class VectorFieldError(SolverError):
    """The vector field returned something of the wrong structure, shape, dtype or value."""


class NonFiniteError(VectorFieldError):
    """The vector field or the state became NaN or infinite."""


class StepSizeUnderflowError(SolverError):
    """The adaptive controller shrank the step below what floating point can resolve."""


class InnerSolveError(SolverError):
    """An inner solve of a proximal implicit method stopped at its iteration cap unconverged."""


class MaxStepsExceededError(SolverError):
    """The solve needed more steps (or more evaluations of ``f``) than the configured cap."""
