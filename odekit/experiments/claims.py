"""What the thesis claims, and the verdict a run gives each claim.

Two kinds of thesis items are judged. A :class:`ThesisNumber` is a printed number; the report
compares the run's metric with it (:func:`number_verdict`). A :class:`Claim` is a qualitative
statement, usually about a figure ("HBNODE needs fewer backward NFE than NODE"); the experiment
judges it at the end of its run from what it measured and records a :class:`Verdict` through
``RunContext.judge``. Most figure claims order models by one quantity; :class:`Ordering` states
such a claim once and judges it for any run.
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


@dataclass(frozen=True)
class Claim:
    """A qualitative statement of the thesis that a run can agree or disagree with."""

    source: str  # e.g. "Fig 3.5"
    statement: str  # the thesis's claim, in our words


@dataclass(frozen=True)
class Ordering(Claim):
    """A claim that every model in ``low`` has a smaller ``quantity`` than every model in ``high``.

    ``factor`` > 1 asks for a margin ("much fewer"): the largest of ``low`` times ``factor`` must
    stay below the smallest of ``high``.
    """

    quantity: str = ""  # key into each model's summary, e.g. "nfe_backward"
    low: tuple[str, ...] = ()
    high: tuple[str, ...] = ()
    factor: float = 1.0

    def judge(self, summary: Mapping[str, Mapping[str, float]], labels: Mapping[str, str], what: str) -> Verdict:
        """``summary[model][quantity]`` of the run; ``what`` names the quantity in the reason."""
        if not self.low or not self.high:
            return Verdict(Outcome.NOT_COMPARABLE, f"the run has only one side of the comparison of {what}")
        absent = [labels.get(m, m) for m in self.low + self.high
                  if m not in summary or self.quantity not in summary[m]]
        if absent:
            return Verdict(Outcome.NOT_COMPARABLE, f"the run has no {what} for {', '.join(absent)}")
        low = {m: summary[m][self.quantity] for m in self.low}
        high = {m: summary[m][self.quantity] for m in self.high}
        if any(math.isnan(v) for v in (*low.values(), *high.values())):  # inf ("never reached") orders fine
            return Verdict(Outcome.NOT_COMPARABLE, f"{what} is NaN for some model")
        shown = "; ".join(f"{labels.get(m, m)} {format_number(v)}" for m, v in {**low, **high}.items())
        holds = max(low.values()) * self.factor < min(high.values())
        margin = f" by a factor {self.factor:g}" if self.factor != 1 else ""
        return Verdict(Outcome.AGREES if holds else Outcome.DIFFERS, f"{what}{margin}: {shown}")


@dataclass(frozen=True)
class Matches(Claim):
    """A claim that every model in ``group`` does as well as the best of ``reference`` on ``quantity``,
    within ``tolerance`` (absolute): "converges as well as the adaptive solvers"."""

    quantity: str = ""
    group: tuple[str, ...] = ()
    reference: tuple[str, ...] = ()
    tolerance: float = 0.0
    higher_is_better: bool = True

    def judge(self, summary: Mapping[str, Mapping[str, float]], labels: Mapping[str, str], what: str) -> Verdict:
        if not self.group or not self.reference:
            return Verdict(Outcome.NOT_COMPARABLE, f"the run has only one side of the comparison of {what}")
        present = {m: summary[m][self.quantity] for m in self.group + self.reference
                   if m in summary and self.quantity in summary[m] and not math.isnan(summary[m][self.quantity])}
        absent = [labels.get(m, m) for m in self.group + self.reference if m not in present]
        if absent:
            return Verdict(Outcome.NOT_COMPARABLE, f"the run has no {what} for {', '.join(absent)}")
        sign = 1.0 if self.higher_is_better else -1.0
        best = max(self.reference, key=lambda m: sign * present[m])
        shortfall = {m: sign * (present[best] - present[m]) for m in self.group}
        holds = all(gap <= self.tolerance for gap in shortfall.values())
        shown = "; ".join(f"{labels.get(m, m)} {format_number(present[m])}" for m in self.group)
        return Verdict(Outcome.AGREES if holds else Outcome.DIFFERS,
                       f"{what} (within {self.tolerance:g} of the best reference, {labels.get(best, best)} "
                       f"{format_number(present[best])}): {shown}")


HEAVY_BALL = ("hbnode", "ghbnode")
FIRST_ORDER_AND_SONODE = ("node", "anode", "sonode")


def heavy_ball_beats(quantity: str, others: tuple[str, ...], source: str, statement: str) -> Ordering:
    """The claim (chapter 3's, in many figures) that HBNODE and GHBNODE have a smaller ``quantity`` than
    ``others``; model kinds as in ``odekit.models``."""
    return Ordering(source, statement, quantity=quantity, low=HEAVY_BALL, high=others)


def judge_orderings(claims: Mapping[str, Claim], summary: Mapping[str, Mapping[str, float]],
                    labels: Mapping[str, str], names: Mapping[str, str],
                    caveat: str | None = None) -> dict[str, Verdict]:
    """Verdicts on every :class:`Ordering` and :class:`Matches` of ``claims``; ``names[quantity]`` says what it
    measures.

    ``caveat`` (e.g. "the models did not leave chance accuracy") makes them not comparable while
    keeping the measured ordering in the reason.
    """
    return {key: claim.judge(summary, labels, names.get(claim.quantity, claim.quantity)).qualified(caveat)
            for key, claim in claims.items() if isinstance(claim, (Ordering, Matches))}


def gap_verdict(pairs: list[tuple[str, float, float]], claimed: str, none_reason: str,
                holds=lambda gap: gap > 0) -> Verdict:
    """Agrees when ``holds(a − b)`` for every ``(where, a, b)`` of ``pairs``; ``claimed`` names a and b."""
    if not pairs:
        return Verdict(Outcome.NOT_COMPARABLE, none_reason)
    agrees = all(holds(a - b) for _, a, b in pairs)
    return Verdict(Outcome.AGREES if agrees else Outcome.DIFFERS,
                   f"{claimed}: " + "; ".join(f"{where} {a:.4g} vs {b:.4g}" for where, a, b in pairs))
