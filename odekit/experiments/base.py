"""What an experiment is, and the context it runs in.

An experiment is a config dataclass with ``smoke``/``quick``/``full`` profiles and a
``run(config, ctx)`` function. It writes everything through its :class:`RunContext`: tables
(CSV), figures (PNG), typed result records (``results.json``, :mod:`odekit.report.records`) and a
checkpoint, all atomically, under
``runs/<experiment>/<timestamp>/``. A run interrupted half-way is resumed from its checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
import traceback
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..report import atomic
from ..report.plots import pyplot
from ..report.records import Key, Labels, Metric, Value, read_results, rows_of
from ..solve.errors import did_you_mean
from .claims import Claim, ThesisNumber, Verdict
from .executors import LocalExecutor, RayExecutor
from .rundir import (
    RunClock,
    RunLock,
    RunStatus,
    claim_resumable,
    code_fingerprint,
    new_run_dir,
    now_iso,
    owner,
    read_json,
    remove_partial_writes,
    runs_sharing_cells,
)

PROFILES = ("smoke", "quick", "full")


class ConfigError(ValueError):
    """A ``--set`` override or profile name that the experiment does not accept."""


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: how to configure it, run it, and read its results."""

    name: str
    title: str
    thesis_items: str
    config_class: type
    profiles: dict[str, dict[str, Any]]
    run: Callable[[Any, RunContext], None]
    summary: str = ""
    # The thesis's printed numbers, keyed like the run's records: Key(metric, model, dataset, x).
    thesis: dict[Key, ThesisNumber] = field(default_factory=dict)
    # How the records' metrics, models and datasets are labelled in the report.
    metrics: dict[str, Metric] = field(default_factory=dict)
    model_labels: Mapping[str, str] = field(default_factory=dict)
    dataset_labels: dict[str, str] = field(default_factory=dict)
    # The thesis's qualitative claims (mostly about figures) that a run judges: ``RunContext.judge``.
    claims: dict[str, Claim] = field(default_factory=dict)
    # missing_data(root, config): what a run of ``config`` lacks under the data root, described for
    # people (empty list: everything is there).
    missing_data: Callable[[Path, Any], list[str]] = lambda root, config: []
    # download(root, config): fetches that data into the root (machines with internet); None if
    # nothing downloads.
    download: Callable[[Path, Any], object] | None = None
    # Wall time of the quick profile on the 2-core reference machine (a fresh clone, quiet): orders
    # `odekit reproduce` cheap first and estimates the time left where no run has been timed here.
    quick_seconds: float = 60.0
    # torch intra-op threads of its runs (``--threads`` overrides). One suits the small models: a
    # small dopri5 solve measured 3.7× slower at 2 threads than at 1 on a quiet 2-core CPU. The graph
    # and convolution experiments set 2: on a quiet 2-core machine their quick profiles took 371 s
    # (grand_labels), 241 s (image_classification), 116 s (grand_depth) at 1 thread against 265 s,
    # 180 s, 90 s at 2; beside another busy process 1 is better (a GRAND step on Cora: 0.45 s at 1
    # thread, 12 s at 2), so pass --threads 1 when the machine is shared.
    threads: int = 1
    # The config fields that only choose which cells its grids have (datasets, models, splits, …): a
    # new run whose other settings match an earlier run's takes that run's finished cells instead of
    # computing them again (growing 10 splits to 100 trains only the 90 new ones). Only for
    # experiments whose cell records depend on nothing but the cell's key and the other settings.
    grid_fields: tuple[str, ...] = ()
    # check(config) raises ValueError saying which setting is wrong: run by ``config`` so that a bad
    # ``--set`` fails before a run folder exists (``run`` checks again for configs built by hand)
    check: Callable[[Any], object] | None = None

    @property
    def labels(self) -> Labels:
        return Labels(self.metrics, self.model_labels, self.dataset_labels)

    def config(self, profile: str, overrides: dict[str, str] | None = None, **fixed: Any):
        """The config of ``profile`` with ``--set`` style string overrides and typed values applied."""
        if profile not in self.profiles:
            raise ConfigError(f"unknown profile {profile!r} for {self.name}; choose one of {', '.join(self.profiles)}")
        values = dict(self.profiles[profile])
        values.update(fixed)
        hints = typing.get_type_hints(self.config_class)
        names = [f.name for f in fields(self.config_class) if f.name != "profile"]
        for key, raw in (overrides or {}).items():
            if key not in names:
                raise ConfigError(f"{self.name} has no setting {key!r}{did_you_mean(key, names)}; "
                                  f"settings: {', '.join(names)}")
            values[key] = _parse_value(key, raw, hints[key])
        config = self.config_class(profile=profile, **values)
        if self.check is not None:
            try:
                self.check(config)
            except ValueError as err:
                raise ConfigError(f"{self.name}: {err}") from None
        return config


def _parse_value(key: str, raw: str, hint: Any) -> Any:
    """Turn the text of ``--set key=value`` into the type the config field declares."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint in (int, float, str):
            return _scalar(hint, raw)
        if origin in (tuple, list):
            items = json.loads(raw) if raw.strip().startswith("[") else [x for x in raw.split(",") if x.strip()]
            if not isinstance(items, list) or not items:
                raise ValueError("expected one or more values, e.g. 1,2,3 or [1, 2, 3]")
            args = typing.get_args(hint)
            item_type = args[0] if args else str
            if item_type in (int, float, str):
                items = [_scalar(item_type, x) for x in items]
            return tuple(items) if origin is tuple else list(items)
        return json.loads(raw)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read --set {key}={raw!r} as {getattr(hint, '__name__', hint)}: {err}") from None


def _scalar(kind: type, value: Any) -> Any:
    """``value`` (text or a JSON number) as ``kind``; a fractional number is never truncated to an int."""
    try:
        number = float(value) if kind is not str and isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if kind is int:
        if isinstance(number, bool) or not float(number).is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(number)
    return kind(number)


@dataclass
class ExperimentConfig:
    """Fields every experiment config has."""

    profile: str = "quick"
    seed: int = 0


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


class RunContext:
    """The run directory of one experiment run, and the ways an experiment writes to it."""

    def __init__(self, experiment: Experiment, config: Any, out: Path, data_root: Path,
                 console: Console | None = None, clock: RunClock | None = None,
                 executor: LocalExecutor | RayExecutor | None = None, earlier: tuple[Path, ...] = ()) -> None:
        self.experiment = experiment
        # runs whose finished cells this one may take (newest first; see Experiment.grid_fields)
        self.earlier = earlier
        self.executor = executor or LocalExecutor()  # where grid cells run (experiments.grid)
        self._clock = clock
        self.config = config
        # absolute: grid cells bind these paths, and a Ray worker elsewhere does not share our working folder
        self.out = Path(out).absolute()
        self.data_root = Path(data_root).absolute()
        self.console = console or Console(stderr=True)
        self.results: dict[Key, Value] = read_results(out)
        self.checkpoint: dict[str, Any] = read_json(out / "checkpoint.json", {})
        self.manifest: dict[str, Any] = read_json(out / "manifest.json", {"tables": {}, "figures": {}})
        self.verdicts: dict[str, Any] = read_json(out / "verdicts.json", {})
        self.resumed = bool(self.checkpoint)  # whether this run continues an interrupted one

    def log(self, message: str) -> None:
        self.console.print(f"[dim]{self.experiment.name}:[/] {message}")

    @contextlib.contextmanager
    def progress(self, total: int, description: str) -> Iterator[Callable[[int], None]]:
        """A progress bar; yields ``advance(n=1)``."""
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def earlier_cells(self, section: str) -> dict[str, tuple[dict, Path]]:
        """The finished cells of checkpoint ``section`` in :attr:`earlier` runs: ``{key: (record, run)}``,
        the newest run's where several have one."""
        found: dict[str, tuple[dict, Path]] = {}
        for run in reversed(self.earlier):  # oldest first: a newer run's record replaces it
            records = read_json(run / "checkpoint.json", {}).get(section, {})
            found.update({key: (record, run) for key, record in records.items()})
        return found

    def save_checkpoint(self) -> None:
        atomic.write_json(self.out / "checkpoint.json", self.checkpoint)
        if self._clock is not None:
            self._clock.update()  # the time so far survives a kill

    def table(self, name: str, header: list[str], rows: list[list[Any]], caption: str = "") -> Path:
        path = self.out / "tables" / f"{name}.csv"
        atomic.write_csv(path, header, rows)
        self.manifest["tables"][name] = {"file": f"tables/{name}.csv", "caption": caption}
        atomic.write_json(self.out / "manifest.json", self.manifest)
        return path

    def figure(self, name: str, fig, caption: str = "") -> Path:
        path = self.out / "figures" / f"{name}.png"
        atomic.save_figure(path, fig)
        pyplot().close(fig)
        self.manifest["figures"][name] = {"file": f"figures/{name}.png", "caption": caption}
        atomic.write_json(self.out / "manifest.json", self.manifest)
        return path

    def record(self, key: Key, value: Value) -> None:
        """Report ``value`` at ``key`` (one row of the run's long-format ``results.json``; a key recorded
        again is overwritten)."""
        if not isinstance(key, Key):
            raise TypeError(f"results are recorded at a Key(metric, model, dataset, x), got {key!r}")
        self.results[key] = value
        atomic.write_json(self.out / "results.json", rows_of(self.experiment.name, self.results))

    def judge(self, verdicts: dict[str, Verdict]) -> None:
        """Record the run's verdicts on claims of ``experiment.claims`` (by key)."""
        unknown = sorted(set(verdicts) - set(self.experiment.claims))
        if unknown:
            raise KeyError(f"{self.experiment.name} declares no claim {unknown}; "
                           f"it has {sorted(self.experiment.claims)}")
        self.verdicts.update({key: verdict.as_dict() for key, verdict in verdicts.items()})
        atomic.write_json(self.out / "verdicts.json", self.verdicts)


class ExperimentRun:
    """One attempt at running an experiment: its folder, held by this process, and how to run it.

    :func:`open_run` makes one (a new folder, or an unfinished one with the same config and data
    root whose owner is gone); :meth:`execute` runs it. A failure is re-raised as itself after the
    status and the traceback (``error.log`` in the run folder) are written; SIGTERM is handled
    like Ctrl-C (status ``interrupted``, resumable).
    """

    def __init__(self, experiment: Experiment, config: Any, out: Path, lock: RunLock, status: RunStatus,
                 data_root: Path, console: Console, executor: LocalExecutor | RayExecutor | None = None,
                 earlier: tuple[Path, ...] = ()) -> None:
        self.experiment, self.config, self.out, self.data_root, self.console = (
            experiment, config, out, data_root, console)
        self._lock, self._status, self.executor, self.earlier = lock, status, executor, earlier

    @property
    def log_path(self) -> Path:
        return self.out / "error.log"

    def execute(self) -> Path:
        clock = RunClock(self.out, self._status)
        try:
            clock.update(state="running", owner=owner(), error=None, log=None, finished=None)
            ctx = RunContext(self.experiment, self.config, self.out, self.data_root, self.console, clock,
                             self.executor, self.earlier)
            with _sigterm_as_interrupt():
                self.experiment.run(self.config, ctx)
        except KeyboardInterrupt:
            clock.update(state="interrupted")
            raise
        except BaseException as err:
            atomic.write_text(self.log_path, "".join(traceback.format_exception(err)))
            clock.update(state="failed", error=f"{type(err).__name__}: {err}", log=self.log_path.name)
            raise
        else:
            clock.update(state="complete", finished=now_iso())
        finally:
            self._lock.release()
        return self.out


def open_run(experiment: Experiment, config: Any, runs: Path, data_root: Path, *, resume: bool = True,
             take_earlier: bool = True, console: Console | None = None,
             executor: LocalExecutor | RayExecutor | None = None) -> ExperimentRun:
    """Claim the folder ``config`` runs in: an unfinished one to resume (``resume``), or a new one; its
    grid cells run on ``executor`` (default: this process). With ``resume`` and ``take_earlier`` the
    run also takes the finished cells of earlier runs of the same code that differ only in
    ``experiment.grid_fields``; otherwise it computes every cell."""
    console = console or Console(stderr=True)
    config_dict = json.loads(json.dumps(config_to_dict(config)))
    claimed = claim_resumable(runs, experiment.name, config_dict, data_root,
                              lambda text: console.print(f"[yellow]note:[/] {text}")) if resume else None
    if claimed is not None:
        out, lock, status = claimed
        status.attempts += 1
        if status.code != code_fingerprint():  # this attempt runs other code than the earlier ones
            status.code = "mixed"
        console.print(f"[yellow]resuming[/] unfinished run {out}")
        for leftover in remove_partial_writes(out):
            console.print(f"[dim]removed the partial write {leftover.name} of the killed attempt[/]")
    else:
        out = new_run_dir(runs, experiment.name)
        lock = RunLock(out)
        lock.acquire()  # nobody else can hold it: mkdir gave this process the folder
        status = RunStatus(experiment.name, config.profile, str(data_root), code=code_fingerprint())
        atomic.write_json(out / "config.json", config_dict)
    earlier = tuple(runs_sharing_cells(runs, experiment.name, config_dict, data_root, experiment.grid_fields,
                                       exclude=out)) if resume and take_earlier else ()
    return ExperimentRun(experiment, config, out, lock, status, data_root, console, executor, earlier)


def execute(experiment: Experiment, config: Any, runs: Path, data_root: Path, *, resume: bool = True,
            take_earlier: bool = True, console: Console | None = None,
            executor: LocalExecutor | RayExecutor | None = None) -> Path:
    """Run ``experiment`` with ``config`` in a new (or resumed) run directory (see :func:`open_run`); returns it."""
    return open_run(experiment, config, runs, data_root, resume=resume, take_earlier=take_earlier, console=console,
                    executor=executor).execute()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a job scheduler's stop) like Ctrl-C while an experiment runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
