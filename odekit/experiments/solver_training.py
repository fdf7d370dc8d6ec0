"""One model trained once per ODE solver, side by side: the training experiments of chapter 5.

Figs 5.6 (FFJORD on MNIST) and 5.7 (GRAND on Coauthor CS) train the same model from the same
initial weights with an adaptive solver and with proximal ones, and plot per iteration what each
costs (forward and backward NFE, wall time) beside how well it trains (loss, a validation or test
metric). :func:`train_with_solvers` is that protocol for any model: the experiment supplies how
to build the model for one :class:`SolverChoice`, the loss of one iteration and the evaluation;
this module owns the iterations of each solver (a cell of the run's grid), their records and
resume, the summary the claims judge and the figure of one panel per quantity.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..report.plots import pyplot
from ..report.records import Key
from ..solve import SolverError
from ..solve.errors import InnerSolveWarning, InvalidInputError
from ..solve.spec import SolveSettings
from .base import RunContext
from .claims import Claim, Matches, Ordering, judge_orderings
from .grid import cell_advance, run_grid, unfinished_path
from .memory import PeakMemory
from .training import EpochResume


@dataclass(frozen=True)
class SolverChoice:
    """One solver of the comparison: a key (``"dopri5"``), its label in tables and figures, and the
    engine settings (:class:`~odekit.solve.spec.SolveSettings` fields) the model integrates with."""

    key: str
    label: str
    settings: Mapping[str, Any]
    proximal: bool = False

    def solve_settings(self) -> SolveSettings:
        return SolveSettings(**self.settings)


def resolve_device(name: str) -> torch.device:
    """``"auto"``: the GPU where there is one, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``… as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for a GPU, but torch sees none; use device=cpu or auto")
    return device


class OnDevice:
    """Tensors (or PyG graphs) a solver's cell uses, on the device the config names, resolved where
    the cell runs: ``placed["train"]``. They travel to the cell on the CPU and move once per copy.
    A device resolved in the driver would be wrong on a Ray worker: the driver's GPU is not the
    worker's (or the worker has none), and ``"auto"`` on a GPU-less driver would keep GPU workers
    on their CPUs."""

    def __init__(self, device: str, **values: Any) -> None:
        torch.device("cuda" if device == "auto" else device)  # a misspelt name fails here, in the driver
        self.device_name = device
        self._values = {name: value.cpu() for name, value in values.items()}
        self._placed: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        return resolve_device(self.device_name)

    def __getitem__(self, name: str) -> Any:
        if self._placed is None:
            device = self.device
            self._placed = {key: value.to(device) for key, value in self._values.items()}
        return self._placed[name]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_placed": None}  # the CPU copies travel; the placed ones stay


PROXIMAL_GRADIENTS = ("backprop", "implicit")  # unrolled inner iterations (the authors'), or implicit (beyond)


def fletcher_reeves(step_size: float, inner_step: float, inner_tol: float, max_iters: int) -> dict[str, Any]:
    """Options of a proximal method on a fixed grid whose stages Fletcher–Reeves solves, stopped on the
    step rule ``‖z_{i+1} − z_i‖ ≤ inner_tol`` (RMS) alone, as the thesis states its runs."""
    return {"step_size": step_size, "inner": "fr", "inner_step": inner_step, "inner_tol": inner_tol,
            "inner_res_tol": 0.0, "inner_max_iters": max_iters}


def proximal_choices(names: Sequence[str], labels: Mapping[str, str], gradients: Sequence[str],
                     options: Mapping[str, Any]) -> list[SolverChoice]:
    """Each proximal method of ``names`` with each gradient of ``gradients`` (keys ``name``, ``name_implicit``)."""
    unknown = [n for n in names if n not in labels] + [g for g in gradients if g not in PROXIMAL_GRADIENTS]
    if unknown:
        raise ValueError(f"unknown proximal solver(s) or gradient(s) {unknown}; solvers: {', '.join(labels)}; "
                         f"gradients: {', '.join(PROXIMAL_GRADIENTS)}")
    label_of = proximal_labels(labels)
    return [SolverChoice(_proximal_key(name, gradient), label_of[_proximal_key(name, gradient)],
                         {"method": name, "gradient": gradient, "options": dict(options)}, proximal=True)
            for gradient in gradients for name in names]


def _proximal_key(name: str, gradient: str) -> str:
    return name + ("_implicit" if gradient == "implicit" else "")


def proximal_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The label of each proximal choice's key, for every gradient."""
    return {_proximal_key(name, gradient): label + (" (implicit gradient)" if gradient == "implicit" else "")
            for name, label in labels.items() for gradient in PROXIMAL_GRADIENTS}


def between(claims: Mapping[str, Claim], choices: Sequence[SolverChoice]) -> dict[str, Claim]:
    """The declared proximal-versus-adaptive claims, applied to the solvers this run trained: an
    :class:`Ordering` puts the proximal ones low, a :class:`Matches` compares them with the others."""
    proximal = tuple(c.key for c in choices if c.proximal)
    others = tuple(c.key for c in choices if not c.proximal)
    def applied(claim: Claim) -> Claim:
        if isinstance(claim, Ordering):
            return replace(claim, low=proximal, high=others)
        if isinstance(claim, Matches):
            return replace(claim, group=proximal, reference=others)
        return claim

    return {key: applied(claim) for key, claim in claims.items()}


@dataclass
class IterationRecord:
    """What one training iteration cost and gave."""

    iteration: int  # 1-based
    loss: float
    nfe_forward: int
    nfe_backward: int
    seconds: float  # forward, backward and optimiser step (evaluation excluded)
    metric: float | None = None  # the evaluation after this iteration, where one was made
    warnings: int = 0  # the engine's warnings in this iteration (implicit stages left unconverged)
    warning: str | None = None  # the first of them (kept with the record, so a resumed run still has it)
    peak_mb: float | None = None  # the iteration's peak memory above what it started with (memory.PeakMemory)


@dataclass
class SolverRun:
    records: list[IterationRecord] = field(default_factory=list)
    status: str = "ok"  # or why the solver stopped (a solver failure is a result, the thesis's NA)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"records": [asdict(r) for r in self.records], "status": self.status, "extra": self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SolverRun:
        return cls([IterationRecord(**r) for r in raw["records"]], raw["status"], dict(raw.get("extra", {})))

    def described_status(self) -> str:
        """The status, with how many iterations the engine warned in (a warning is not a success)."""
        warned = [r for r in self.records if r.warnings]
        described = self.status
        if warned:
            first = f"iteration {warned[0].iteration}: {warned[0].warning or ''}"
            described += f"; engine warnings in {len(warned)} of {len(self.records)} iterations ({first[:120]})"
        for key in ("finish_warning", "finish_error"):
            if key in self.extra:
                described += f"; after training: {self.extra[key][:120]}"
        return described

    def summary(self, tail: int = 5) -> dict[str, float]:
        """Means per iteration, the total time, the loss over the last ``tail`` iterations, the last metric."""
        if not self.records:
            return {}
        r = self.records
        metrics = [x.metric for x in r if x.metric is not None]
        forward = float(np.mean([x.nfe_forward for x in r]))
        backward = float(np.mean([x.nfe_backward for x in r]))
        peaks = [x.peak_mb for x in r if x.peak_mb is not None]
        return {"nfe_forward": forward, "nfe_backward": backward, "nfe": forward + backward,
                "peak_mb": max(peaks) if peaks else math.nan,
                "seconds": float(sum(x.seconds for x in r)), "loss": float(np.mean([x.loss for x in r[-tail:]])),
                "metric": metrics[-1] if metrics else math.nan, "iterations": float(len(r))}


def train_with_solvers(ctx: RunContext, choices: Sequence[SolverChoice], iterations: int, *,
                       build: Callable[[SolverChoice], tuple[torch.nn.Module, torch.optim.Optimizer]],
                       loss_of: Callable[[torch.nn.Module, torch.Generator], torch.Tensor],
                       nfe_of: Callable[[torch.nn.Module], tuple[int, int]],
                       evaluate: Callable[[torch.nn.Module], float],
                       evaluate_every: int,
                       warmup: int = 0,
                       finish: Callable[[torch.nn.Module, SolverChoice], dict[str, Any]] | None = None,
                       seed: int = 0, description: str = "training") -> dict[str, SolverRun]:
    """Train ``build(choice)`` for ``iterations`` iterations with each solver; returns their runs.

    Every solver starts from the same weights and draws the same batches (``build`` and the
    batch generator are seeded identically). ``loss_of(model, generator)`` is one iteration's
    loss, ``nfe_of(model)`` its forward and backward NFE (read after ``backward()``),
    ``evaluate(model)`` the metric, taken every ``evaluate_every`` iterations and after the last.
    The learning rate rises linearly over the first ``warmup`` iterations (FFJORD's warm-up).
    ``finish(model, choice)`` may add results of the trained model (e.g. samples) to the run.
    Each solver is a cell of the run's grid (:func:`~odekit.experiments.grid.run_grid`, checkpoint
    section ``"solvers"``), so the callables travel to where it runs: they must be picklable and
    hold no :class:`RunContext` (a file ``finish`` keeps goes under the run folder, ``ctx.out``).
    Finished solvers are kept in the run's checkpoint; an unfinished one resumes from its last
    evaluation (:class:`~odekit.experiments.training.EpochResume`).
    """
    keys = [c.key for c in choices]
    if not keys:
        raise ValueError("no solver to train: the config's solver lists are empty")
    if len(set(keys)) != len(keys):
        raise ValueError(f"each solver may appear once; got {keys}")
    if iterations < 1 or evaluate_every < 1 or warmup < 0:
        raise ValueError(f"need iterations ≥ 1, evaluate_every ≥ 1 and warmup ≥ 0; got {iterations}, "
                         f"{evaluate_every}, {warmup}")
    work = functools.partial(solver_record, out=ctx.out, iterations=iterations, build=build, loss_of=loss_of,
                             nfe_of=nfe_of, evaluate=evaluate, evaluate_every=evaluate_every, warmup=warmup,
                             finish=finish, seed=seed)
    done = run_grid(ctx, choices, work, description, describe=_describe, size=lambda choice: iterations,
                    section="solvers")
    return {key: SolverRun.from_dict(record) for key, record in done.items()}


def solver_record(choice: SolverChoice, *, out: Path, iterations: int,
                  build: Callable[[SolverChoice], tuple[torch.nn.Module, torch.optim.Optimizer]],
                  loss_of: Callable[[torch.nn.Module, torch.Generator], torch.Tensor],
                  nfe_of: Callable[[torch.nn.Module], tuple[int, int]], evaluate: Callable[[torch.nn.Module], float],
                  evaluate_every: int, warmup: int,
                  finish: Callable[[torch.nn.Module, SolverChoice], dict[str, Any]] | None, seed: int) -> dict:
    """Train with one solver (the grid's work function, see :func:`train_with_solvers`): its
    :class:`SolverRun` as a dict. The state at its last evaluation is kept under the run folder ``out``
    until it finishes."""
    torch.manual_seed(seed)
    model, optimiser = build(choice)
    rates = [group["lr"] for group in optimiser.param_groups]  # before a resumed state changes them
    generator = torch.Generator().manual_seed(seed)
    resume = EpochResume(unfinished_path(out, choice))
    run = SolverRun([IterationRecord(**r) for r in resume.restore(model, optimiser, generator)])
    cell_advance(len(run.records))

    def learning_rate(iteration: int) -> None:
        factor = min(1.0, iteration / warmup) if warmup else 1.0
        for group, rate in zip(optimiser.param_groups, rates):
            group["lr"] = rate * factor

    def save() -> None:
        resume.save(model, optimiser, generator, [asdict(r) for r in run.records])

    run.status = _train(run, model, optimiser, learning_rate, generator, iterations, loss_of, nfe_of, evaluate,
                        evaluate_every, save)
    if run.status == "ok" and finish is not None:
        _finish(run, model, choice, finish)
    return run.as_dict()


def _finish(run: SolverRun, model: torch.nn.Module, choice: SolverChoice,
            finish: Callable[[torch.nn.Module, SolverChoice], dict[str, Any]]) -> None:
    """Add ``finish(model, choice)`` to the run's extras; its failure or engine warnings are noted there."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InnerSolveWarning)
        try:
            run.extra.update(finish(model, choice))
        except SolverError as err:  # e.g. sampling backwards failed: the training stands
            run.extra["finish_error"] = f"{type(err).__name__}: {str(err)[:160]}"
    engine = [w for w in caught if issubclass(w.category, InnerSolveWarning)]
    for other in caught:
        if other not in engine:
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if engine:  # e.g. the trained model's test pass left stages unconverged
        run.extra["finish_warning"] = str(engine[0].message)


def _describe(choice: SolverChoice, record: dict) -> str:
    run = SolverRun.from_dict(record)
    last = run.records[-1] if run.records else None
    shown = "" if last is None or last.metric is None else f", metric {last.metric:.4g}"
    return f"{choice.label}: {len(run.records)} iterations, {run.status}{shown}"


def _train(run: SolverRun, model, optimiser, learning_rate, generator, iterations: int, loss_of, nfe_of, evaluate,
           evaluate_every: int, save: Callable[[], None]) -> str:
    """The iterations of one solver (appending to ``run.records``); returns the run's status."""
    device = next(model.parameters()).device
    memory = PeakMemory(device)
    try:
        for iteration in range(len(run.records) + 1, iterations + 1):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", InnerSolveWarning)
                model.train()
                with memory.measure():
                    start = time.perf_counter()
                    optimiser.zero_grad()
                    loss = loss_of(model, generator)
                    if not bool(torch.isfinite(loss.detach())):
                        return f"the loss became non-finite at iteration {iteration}"
                    loss.backward()
                    learning_rate(iteration)
                    optimiser.step()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)  # the queued backward kernels belong to this time
                    seconds = time.perf_counter() - start
                forward, backward = nfe_of(model)
                record = IterationRecord(iteration, loss.item(), forward, backward, seconds,
                                         peak_mb=memory.megabytes)
                if iteration % evaluate_every == 0 or iteration == iterations:
                    model.eval()
                    with torch.no_grad():
                        record.metric = float(evaluate(model))
            # The engine's warnings become part of the record (and of the run's status), not console noise.
            engine = [w for w in caught if issubclass(w.category, InnerSolveWarning)]
            for other in caught:
                if other not in engine:
                    warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
            record.warnings = len(engine)
            record.warning = str(engine[0].message) if engine else None
            run.records.append(record)
            if record.metric is not None:
                save()
            cell_advance()
    except InvalidInputError:
        raise  # a bad setting (a typo in the options) is the config's error, not the solver's result
    except SolverError as err:
        return f"solver failed: {type(err).__name__}: {str(err)[:160]}"
    return "ok"


@dataclass(frozen=True)
class Panel:
    """One panel of the comparison figure: a record field against the iteration."""

    quantity: str  # "loss", "metric", "nfe_forward", "nfe_backward", "seconds"
    label: str
    cumulative: bool = False  # plot the running sum (total time)
    log: bool = False


def plot_solver_curves(ctx: RunContext, name: str, runs: Mapping[str, SolverRun], choices: Sequence[SolverChoice],
                       panels: Sequence[Panel], title: str, caption: str) -> None:
    """One panel per quantity, one line per solver (proximal dashed), against the training iteration."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for choice in choices:
            run = runs.get(choice.key)
            points = [(r.iteration, getattr(r, panel.quantity)) for r in (run.records if run else [])
                      if getattr(r, panel.quantity) is not None]
            if not points:
                continue
            x, y = np.array(points, dtype=float).T
            ax.plot(x, np.cumsum(y) if panel.cumulative else y, "--" if choice.proximal else "-",
                    marker="o" if panel.quantity == "metric" else None, markersize=3, label=choice.label)
        ax.set_xlabel("iteration")
        ax.set_ylabel(panel.label)
        if panel.log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    ctx.figure(name, fig, caption=caption)


def solver_tables(ctx: RunContext, name: str, runs: Mapping[str, SolverRun], choices: Sequence[SolverChoice],
                  metric_label: str, caption: str) -> dict[str, dict[str, float]]:
    """The per-solver summary table and the per-iteration curves (CSV); returns the summaries by key of
    the solvers that finished (a failed one's partial numbers are in the table, not in the claims)."""
    summaries = {c.key: runs[c.key].summary() for c in choices if c.key in runs}
    rows = []
    for c in choices:
        s, run = summaries.get(c.key, {}), runs.get(c.key)
        rows.append([c.label, int(s.get("iterations", 0)), _fmt(s.get("nfe_forward")), _fmt(s.get("nfe_backward")),
                     _fmt(s.get("seconds")), _fmt(s.get("peak_mb")), _fmt(s.get("loss")), _fmt(s.get("metric")),
                     run.described_status() if run else "not run"])
    ctx.table(name, ["solver", "iterations", "forward NFE / iteration", "backward NFE / iteration",
                     "total seconds", "peak MB / iteration", "final loss", metric_label, "status"], rows,
              caption=caption + " Peak MB: the largest memory an iteration took above its start.")
    curves = [[c.label, r.iteration, f"{r.loss:.6g}", r.nfe_forward, r.nfe_backward, f"{r.seconds:.4g}",
               "" if r.metric is None else f"{r.metric:.6g}"]
              for c in choices if c.key in runs for r in runs[c.key].records]
    finished = {key: summary for key, summary in summaries.items() if runs[key].status == "ok"}
    ctx.table(f"{name}_curves", ["solver", "iteration", "loss", "forward NFE", "backward NFE", "seconds",
                                 metric_label], curves, caption="Every training iteration of every solver.")
    return finished


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def record_and_judge(ctx: RunContext, summaries: Mapping[str, Mapping[str, float]], choices: Sequence[SolverChoice],
                     claims: Mapping[str, Claim], names: Mapping[str, str], quantities: Sequence[str],
                     metric_name: str) -> None:
    """The run's records (``Key(quantity, solver key)`` for each summary quantity of ``quantities``; the
    summary's ``"metric"`` is recorded as ``metric_name``) and its verdicts on the proximal-versus-adaptive
    ``claims`` (:func:`between`; ``names[quantity]`` for the reasons)."""
    for choice in choices:
        summary = summaries.get(choice.key, {})
        for quantity in quantities:
            if quantity in summary:
                name = metric_name if quantity == "metric" else quantity
                ctx.record(Key(name, choice.key), round(summary[quantity], 4))
    ctx.judge(judge_orderings(between(claims, choices), summaries, {c.key: c.label for c in choices}, names))
