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

A long cell (a model trained for many epochs) declares its size in units of progress
(``size(cell)``, e.g. its epochs) and reports them as it goes with :func:`cell_advance`, and its
news with :func:`cell_log`: in this process they move the run's one progress bar and print under
it; in a Ray worker they do nothing, and the bar moves by the cell's whole size when it finishes.
A cell that keeps its own state between units (an epoch checkpoint, trained weights) writes it
under a folder it is given (the run folder, which a cluster's nodes must share like the data); the
state of its unfinished work goes to :func:`unfinished_path`, which the runner removes only once the
cell's record is in the checkpoint, so a run killed at any moment loses no finished work.

An experiment whose cell records depend on nothing but the cell's key and the settings outside its
``Experiment.grid_fields`` lets a new run take the cells earlier runs of those settings finished
(:meth:`~odekit.experiments.base.RunContext.earlier_cells`): a grid grown from 10 splits to 100
computes the 90 new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .base import RunContext


class GridCell(Protocol):
    @property
    def key(self) -> str: ...


def unfinished_path(out: Path, cell: GridCell) -> Path:
    """Where ``cell`` keeps the state of its unfinished work under the run folder ``out`` (e.g. an
    :class:`~odekit.experiments.training.EpochResume`); :func:`run_grid` removes it once the cell's
    record is saved."""
    return out / f"unfinished_{cell.key}.pt"


class _Reporter:
    """Where :func:`cell_advance` and :func:`cell_log` go in this process (nowhere in a Ray worker)."""

    advance: Callable[[int], None] | None = None
    log: Callable[[str], None] | None = None
    ticks = 0


def cell_advance(n: int = 1) -> None:
    """Move the grid's progress bar by ``n`` units of the running cell (see ``size`` of :func:`run_grid`)."""
    if _Reporter.advance is not None:
        _Reporter.ticks += n
        _Reporter.advance(n)


def cell_log(message: str) -> None:
    """A line of news from the running cell, printed by the run when the cell runs in this process."""
    if _Reporter.log is not None:
        _Reporter.log(message)


def _take_earlier(ctx: RunContext, section: str, todo: list[GridCell], done: dict[str, dict]) -> list[GridCell]:
    """Put the cells of ``todo`` that an earlier run of the same settings finished into ``done`` (and the
    checkpoint); returns the cells left to compute."""
    finished = ctx.earlier_cells(section)
    taken = [cell for cell in todo if cell.key in finished]
    if not taken:
        return todo
    for cell in taken:
        done[cell.key] = finished[cell.key][0]
    ctx.save_checkpoint()
    sources = sorted({finished[cell.key][1].name for cell in taken})
    ctx.log(f"took {len(taken)} finished cell{'s' if len(taken) != 1 else ''} from earlier run"
            f"{'s' if len(sources) != 1 else ''} {', '.join(sources)} (the same settings but for which cells "
            f"the grid has); {len(todo) - len(taken)} left to compute")
    return [cell for cell in todo if cell.key not in finished]


def run_grid(ctx: RunContext, cells: Sequence[GridCell], work: Callable[[Any], dict], description: str,
             describe: Callable[[Any, dict], str] | None = None,
             size: Callable[[Any], int] | None = None, section: str = "cells") -> dict[str, dict]:
    """Run every cell of ``cells`` not yet in the checkpoint through ``ctx.executor``; returns
    ``{cell.key: record}`` for all of them (earlier attempts' records included).

    ``describe(cell, record)`` gives the log line of a finished cell; ``size(cell)`` its units of
    progress (default 1), which the cell may report as it goes with :func:`cell_advance`. An
    experiment with several grids keeps each under its own ``section`` of the checkpoint.
    """
    # Sweeps may overlap (a depth sweep and a label sweep meet at one cell): a cell runs once.
    cells = list({cell.key: cell for cell in cells}.values())
    keys = [cell.key for cell in cells]
    units = size or (lambda cell: 1)
    done: dict[str, dict] = ctx.checkpoint.setdefault(section, {})
    todo = [cell for cell in cells if cell.key not in done]
    if todo and ctx.earlier:
        todo = _take_earlier(ctx, section, todo, done)
    for cell in cells:  # a run killed between saving a record and removing its cell's state left it behind
        if cell.key in done:
            unfinished_path(ctx.out, cell).unlink(missing_ok=True)
    with ctx.progress(sum(units(cell) for cell in cells), description) as advance:
        advance(sum(units(cell) for cell in cells if cell.key in done))
        _Reporter.advance, _Reporter.log, _Reporter.ticks = advance, ctx.log, 0
        try:
            for cell, record in ctx.executor.map(work, todo):
                done[cell.key] = record
                ctx.save_checkpoint()  # streamed: a finished cell is on disk before the next is awaited
                unfinished_path(ctx.out, cell).unlink(missing_ok=True)  # only now: its record is safe
                if describe is not None:
                    ctx.log(describe(cell, record))
                # what the cell did not report itself (all of it when it ran elsewhere)
                advance(max(0, units(cell) - _Reporter.ticks))
                _Reporter.ticks = 0
        finally:
            _Reporter.advance = _Reporter.log = None
    return {key: done[key] for key in keys}
