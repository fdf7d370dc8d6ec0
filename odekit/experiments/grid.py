"""Experiments as grids of cells: one runner for iteration, checkpointing, resume and progress.

A *cell* is one independent unit of an experiment's protocol (one training run: a dataset, a
model, a labelling rate, a split, a seed). It is a frozen dataclass with a ``key`` that names it
uniquely. The experiment gives :func:`run_grid` its cells and a pure function from one cell to
its record (a JSON-able dict; the function must be picklable, e.g. a module-level function
bound with :func:`functools.partial`, so a Ray worker can run it). The runner skips the cells
the checkpoint already holds, hands the rest to the run's executor
(:mod:`~odekit.experiments.executors`), and writes each record into the checkpoint as soon as its
cell finishes, in whatever order cells finish: a run killed at any point resumes with only the
unfinished cells, and no cell is recorded twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .base import RunContext


class GridCell(Protocol):
    @property
    def key(self) -> str: ...


def run_grid(ctx: RunContext, cells: Sequence[GridCell], work: Callable[[Any], dict], description: str,
             describe: Callable[[Any, dict], str] | None = None) -> dict[str, dict]:
    """Run every cell of ``cells`` not yet in the checkpoint through ``ctx.executor``; returns
    ``{cell.key: record}`` for all of them (earlier attempts' records included).

    ``describe(cell, record)`` gives the log line of a finished cell.
    """
    # Sweeps may overlap (a depth sweep and a label sweep meet at one cell): a cell runs once.
    cells = list({cell.key: cell for cell in cells}.values())
    keys = [cell.key for cell in cells]
    done: dict[str, dict] = ctx.checkpoint.setdefault("cells", {})
    todo = [cell for cell in cells if cell.key not in done]
    with ctx.progress(len(cells), description) as advance:
        advance(len(cells) - len(todo))
        for cell, record in ctx.executor.map(work, todo):
            done[cell.key] = record
            ctx.save_checkpoint()  # streamed: a finished cell is on disk before the next is awaited
            if describe is not None:
                ctx.log(describe(cell, record))
            advance()
    return {key: done[key] for key in keys}
