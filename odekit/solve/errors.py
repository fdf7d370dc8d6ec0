"""Exceptions raised by the solver engine, and the helpers that word its input errors.

Every failure the engine detects raises a subclass of :class:`SolverError`, with a message that
names what was wrong and how to fix it, so that a bad call never returns silent garbage.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Iterable

import torch


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


class InnerSolveWarning(UserWarning):
    """Implicit stages of a fixed-step solve stopped unconverged; the solve's status says so too."""


class MaxStepsExceededError(SolverError):
    """The solve needed more steps (or more evaluations of ``f``) than the configured cap."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``name``, else ``""``.

    Case is ignored when comparing, so ``"RK4"`` suggests ``'rk4'``.
    """
    by_folded = {str(c).casefold(): str(c) for c in choices}
    close = difflib.get_close_matches(str(name).casefold(), list(by_folded), n=1, cutoff=0.6)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


def choice_option(name: str, value: Any, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``; else an error listing them, with the closest as a suggestion."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
        raise InvalidInputError(f"option {name}={value!r}{hint} is not one of {', '.join(map(repr, allowed))}")
    return value


def number_option(name: str, value: Any, *, gt: float | None = None, ge: float | None = None,
                  lt: float | None = None, le: float | None = None, integer: bool = False,
                  finite: bool = True) -> int | float:
    """``value`` as a Python ``int`` (with ``integer``) or ``float``, checked to lie within the bounds.

    A number is a Python or numpy real number, or a one-element tensor or numpy array (``True`` is
    not one). ``gt``/``lt`` are strict bounds, ``ge``/``le`` inclusive; ``finite=False`` admits
    ``inf``. Anything else raises :class:`InvalidInputError` naming the option, the value and its type.
    """
    number = _as_number(value)
    fits = (
        number is not None
        and not math.isnan(number)
        and (math.isfinite(number) or not finite)
        and (isinstance(number, int) or not integer)
        and (gt is None or number > gt)
        and (ge is None or number >= ge)
        and (lt is None or number < lt)
        and (le is None or number <= le)
    )
    if not fits:
        kind = "an integer" if integer else "a finite number" if finite else "a number"
        if lt is None and le is None:  # at most a lower bound: "x > 0" reads better than "0 < x"
            condition = f"{name} > {gt:g}" if gt is not None else f"{name} ≥ {ge:g}" if ge is not None else ""
        else:
            lower = f"{gt:g} < " if gt is not None else f"{ge:g} ≤ " if ge is not None else ""
            condition = f"{lower}{name} " + (f"< {lt:g}" if lt is not None else f"≤ {le:g}")
        raise InvalidInputError(f"option {name} must be {kind}{' with ' + condition if condition else ''}, "
                                f"got {value!r} of type {type(value).__name__}")
    return number


def _as_number(value: Any) -> int | float | None:
    """``value`` as a Python number if it is one real number, else ``None``."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 and not value.is_meta else None
    elif not isinstance(value, numbers.Number) and getattr(value, "size", None) == 1 and hasattr(value, "item"):
        value = value.item()  # a one-element numpy array
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)
