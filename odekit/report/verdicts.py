"""How a run's result relates to a thesis item: outcomes, verdicts, and printed thesis numbers.

A :class:`ThesisNumber` is a number printed in the thesis; the report compares a run's metric with
it (:func:`number_verdict`). The experiments judge the thesis's qualitative claims into the same
:class:`Verdict` (``odekit.experiments.claims``). This module sits below both, so the report reads
verdicts without importing the experiments.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass


class Outcome(str, enum.Enum):
    """How a run's result relates to a thesis item."""

    AGREES = "agrees"
    DIFFERS = "differs"
    NOT_COMPARABLE = "not comparable"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome.value, "reason": self.reason}

    @classmethod
    def from_dict(cls, raw: Mapping[str, str]) -> Verdict:
        return cls(Outcome(raw["outcome"]), raw["reason"])

    def qualified(self, caveat: str | None) -> Verdict:
        """Not comparable for ``caveat`` (e.g. an untrained model), keeping what was measured."""
        if caveat is None or self.outcome is Outcome.NOT_COMPARABLE:
            return self
        return Verdict(Outcome.NOT_COMPARABLE, f"{caveat}; measured: {self.outcome.value}, {self.reason}")


@dataclass(frozen=True)
class ThesisNumber:
    """A number printed in the thesis that one of our metrics reproduces.

    How it is judged: with ``std``, the run agrees within one standard deviation; with ``rel_tol``,
    within that relative distance; with ``higher_is_better`` alone, when it is at least as good;
    with none of them (t statistics, differences), when it has the same sign.
    """

    value: float
    source: str  # e.g. "Table 4.3, Cora, 1 label/class"
    std: float | None = None
    higher_is_better: bool | None = None
    rel_tol: float | None = None


def format_number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def number_verdict(value: object, ref: ThesisNumber) -> Verdict:
    """The verdict on one measured ``value`` against the thesis's ``ref`` (rules in :class:`ThesisNumber`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return Verdict(Outcome.NOT_COMPARABLE, f"no number measured ({value})")
    gap = value - ref.value
    if ref.std is not None:
        if abs(gap) <= ref.std:
            return Verdict(Outcome.AGREES, "within ±1 std")
        spread = f" ({abs(gap) / ref.std:.2g} std)" if ref.std > 0 else ""
        return Verdict(Outcome.DIFFERS, f"off by {gap:+.4g}{spread}")
    ratio = value / ref.value if ref.value else math.inf
    better = ref.higher_is_better is not None and (ratio >= 1 if ref.higher_is_better else ratio <= 1)
    if ref.rel_tol is not None:
        if abs(ratio - 1) <= ref.rel_tol:
            return Verdict(Outcome.AGREES, f"within {ref.rel_tol:.0%} ({ratio:.3g}× the thesis's)")
        if better:
            return Verdict(Outcome.AGREES, f"better: {ratio:.3g}× the thesis's")
        return Verdict(Outcome.DIFFERS, f"{ratio:.3g}× the thesis's (tolerance {ref.rel_tol:.0%})")
    if ref.higher_is_better is not None:
        word = "better" if better else "worse"
        return Verdict(Outcome.AGREES if better else Outcome.DIFFERS, f"{word}: {ratio:.3g}× the thesis's")
    if value == 0 or ref.value == 0:
        return Verdict(Outcome.NOT_COMPARABLE, "one of the two is zero: no sign to compare")
    same = (value > 0) == (ref.value > 0)
    return Verdict(Outcome.AGREES if same else Outcome.DIFFERS,
                   "same sign" if same else f"opposite sign (difference {gap:+.4g})")
