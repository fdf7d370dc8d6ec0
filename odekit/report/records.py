"""Results as typed records: one long-format table of (experiment, model, dataset, x, metric, value).

Every number a run reports is a :class:`Record`. Its coordinates are identifiers, never display
text: ``model`` is the experiment's name for a model, solver or scheme (``"grand++-l"``,
``"hbnode"``, ``"dopri5"``), ``dataset`` a dataset or test problem, ``x`` the swept coordinate
(labelled nodes per class, depth T, step size h, tolerance), ``metric`` what is measured
(``"accuracy_vs_labels"``, ``"nfe_backward"``). The thesis numbers an experiment reproduces are
keyed by the same coordinates (a :class:`Key`), so the report pairs them by equality. Labels for
people come from the experiment's :class:`Metric` specs and label tables, and only when rendering.

A run folder keeps its records in ``results.json``: a list of rows, one per record (pandas reads
it with ``pandas.read_json(path)``); ``odekit report`` also writes all experiments' records into
one ``results.csv`` beside the report.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Value = Any  # a number, or text where nothing was measured ("not reached"), or a small JSON value

COLUMNS = ("experiment", "model", "dataset", "x", "metric", "value")


@dataclass(frozen=True)
class Key:
    """Where a number sits: what is measured, of which model, on which dataset, at which x."""

    metric: str
    model: str = ""
    dataset: str = ""
    x: int | float | str | None = None


@dataclass(frozen=True)
class Record:
    """One reported number (a row of the long-format table)."""

    experiment: str
    model: str
    dataset: str
    x: int | float | str | None
    metric: str
    value: Value

    @classmethod
    def of(cls, experiment: str, key: Key, value: Value) -> Record:
        return cls(experiment, key.model, key.dataset, key.x, key.metric, value)

    @property
    def key(self) -> Key:
        return Key(self.metric, self.model, self.dataset, self.x)

    def as_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Metric:
    """How a metric is shown: its label, and the name of the coordinate it is swept over."""

    label: str  # e.g. "test accuracy (%)"
    x: str = ""  # e.g. "labels/class"; "" if the metric has no x


def read_results(run: Path) -> dict[Key, Value]:
    """The records of the run folder ``run``, by key (empty if it has none)."""
    path = run / "results.json"
    if not path.exists():
        return {}
    records = [Record(**row) for row in json.loads(path.read_text())]
    return {record.key: record.value for record in records}


def predates_records(run: Path) -> bool:
    """Whether ``run`` was written before results were typed records (``metrics.json``, no ``results.json``):
    its numbers cannot be paired with the thesis's, so it counts as outdated (run it again)."""
    return (run / "metrics.json").exists() and not (run / "results.json").exists()


def rows_of(experiment: str, results: Mapping[Key, Value]) -> list[dict[str, Any]]:
    return [Record.of(experiment, key, value).as_row() for key, value in results.items()]


def format_x(x: float | str | None) -> str:
    if x is None:
        return ""
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


@dataclass(frozen=True)
class Labels:
    """Display labels of an experiment's identifiers (an identifier without one is shown as itself)."""

    metrics: Mapping[str, Metric] = dataclasses.field(default_factory=dict)
    models: Mapping[str, str] = dataclasses.field(default_factory=dict)
    datasets: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def metric(self, key: Key) -> str:
        spec = self.metrics.get(key.metric)
        return spec.label if spec else key.metric

    def model(self, key: Key) -> str:
        return self.models.get(key.model, key.model)

    def dataset(self, key: Key) -> str:
        return self.datasets.get(key.dataset, key.dataset)

    def x(self, key: Key) -> str:
        if key.x is None:
            return ""
        spec = self.metrics.get(key.metric)
        return f"{spec.x} = {format_x(key.x)}" if spec and spec.x else format_x(key.x)
