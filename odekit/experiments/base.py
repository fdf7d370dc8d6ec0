"""What an experiment is, and the context it runs in.

An experiment is a config dataclass with ``smoke``/``quick``/``full`` profiles and a
``run(config, ctx)`` function. It writes everything through its :class:`RunContext`: tables
(CSV), figures (PNG), metrics (JSON) and a checkpoint, all atomically, under
``runs/<experiment>/<timestamp>/``. A run interrupted half-way is resumed from its checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import typing
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..report import atomic
from ..report.plots import pyplot

PROFILES = ("smoke", "quick", "full")


class ConfigError(ValueError):
    """A ``--set`` override or profile name that the experiment does not accept."""


@dataclass(frozen=True)
class ThesisNumber:
    """A number printed in the thesis that one of our metrics reproduces."""

    value: float
    source: str  # e.g. "Table 4.3, Cora, 1 label/class"
    std: float | None = None
    higher_is_better: bool | None = None


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: how to configure it, run it, and read its results."""

    name: str
    title: str
    thesis_items: str
    config_class: type
    profiles: dict[str, dict[str, Any]]
    run: Callable[[Any, "RunContext"], None]
    summary: str = ""
    thesis: dict[str, ThesisNumber] = field(default_factory=dict)
    # Returns human-readable descriptions of missing data (empty list: everything is there).
    missing_data: Callable[[Path], list[str]] = lambda root: []
    # Fetches the missing data into the root (machines with internet); None if nothing downloads.
    download: Callable[[Path], object] | None = None

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
                raise ConfigError(f"{self.name} has no setting {key!r}; settings: {', '.join(names)}")
            values[key] = _parse_value(key, raw, hints[key])
        return self.config_class(profile=profile, **values)


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
            return hint(raw)
        if origin in (tuple, list):
            items = json.loads(raw) if raw.strip().startswith("[") else [x for x in raw.split(",") if x.strip()]
            args = typing.get_args(hint)
            item_type = args[0] if args else str
            if item_type in (int, float, str):
                items = [item_type(x) for x in items]
            return tuple(items) if origin is tuple else list(items)
        return json.loads(raw)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read --set {key}={raw!r} as {getattr(hint, '__name__', hint)}: {err}") from None


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
                 console: Console | None = None) -> None:
        self.experiment = experiment
        self.config = config
        self.out = out
        self.data_root = data_root
        self.console = console or Console(stderr=True)
        self.metrics: dict[str, Any] = _read_json(out / "metrics.json", {})
        self.checkpoint: dict[str, Any] = _read_json(out / "checkpoint.json", {})
        self.manifest: dict[str, Any] = _read_json(out / "manifest.json", {"tables": {}, "figures": {}})
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

    def save_checkpoint(self) -> None:
        atomic.write_json(self.out / "checkpoint.json", self.checkpoint)

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

    def metric(self, key: str, value: Any) -> None:
        self.metrics[key] = value
        atomic.write_json(self.out / "metrics.json", self.metrics)


def new_run_dir(runs: Path, name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path, n = runs / name / stamp, 1
    while path.exists():
        n += 1
        path = runs / name / f"{stamp}-{n}"
    return path


def find_resumable(runs: Path, name: str, config: dict[str, Any]) -> Path | None:
    """The newest unfinished run of ``name`` with exactly this config, if any."""
    folder = runs / name
    if not folder.is_dir():
        return None
    for run in sorted(folder.iterdir(), reverse=True):
        status = _read_json(run / "status.json", {})
        unfinished = status.get("state") in ("running", "failed", "interrupted")
        if unfinished and _read_json(run / "config.json", None) == config:
            return run
    return None


def execute(experiment: Experiment, config: Any, runs: Path, data_root: Path, *, resume: bool = True,
            console: Console | None = None) -> Path:
    """Run ``experiment`` with ``config`` in a new (or resumed) run directory; returns it."""
    console = console or Console(stderr=True)
    config_dict = json.loads(json.dumps(config_to_dict(config)))
    out = find_resumable(runs, experiment.name, config_dict) if resume else None
    if out is not None:
        console.print(f"[yellow]resuming[/] unfinished run {out}")
    else:
        out = new_run_dir(runs, experiment.name)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "config.json", config_dict)
    started = time.time()
    status = {"state": "running", "experiment": experiment.name, "profile": config.profile,
              "started": datetime.now(timezone.utc).isoformat()}
    atomic.write_json(out / "status.json", status)
    ctx = RunContext(experiment, config, out, data_root, console)
    try:
        experiment.run(config, ctx)
    except KeyboardInterrupt:
        atomic.write_json(out / "status.json", {**status, "state": "interrupted"})
        raise
    except BaseException as err:
        atomic.write_json(out / "status.json", {**status, "state": "failed", "error": f"{type(err).__name__}: {err}"})
        raise
    atomic.write_json(out / "status.json", {**status, "state": "complete", "seconds": round(time.time() - started, 1),
                                            "finished": datetime.now(timezone.utc).isoformat()})
    return out


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default
