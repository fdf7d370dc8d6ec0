"""What the thesis claims, and the verdict a run gives each claim.

Two kinds of thesis items are judged. A :class:`ThesisNumber` is a printed number; the report
compares the run's metric with it (:func:`number_verdict`). A :class:`Claim` is a qualitative
statement, usually about a figure ("HBNODE needs fewer backward NFE than NODE"); the experiment
judges it at the end of its run from what it measured and records a :class:`Verdict` through
``RunContext.judge``. Most figure claims order models by one quantity; :class:`Ordering` states
such a claim once and judges it for any run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..report.verdicts import Outcome, ThesisNumber, Verdict, format_number, number_verdict


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


__all__ = ["Claim", "Matches", "Ordering", "Outcome", "ThesisNumber", "Verdict", "format_number", "gap_verdict",
           "heavy_ball_beats", "judge_orderings", "number_verdict"]
