"""The ``odekit`` command line: list, run, reproduce and report the thesis experiments."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import click
from rich.console import Console
from rich.table import Table

from . import __version__

console = Console(stderr=True, soft_wrap=True)  # messages with paths stay whole
out_console = Console(soft_wrap=True)  # paths stay whole, for scripts that read them


def _runs_dir(out: str | None) -> Path:
    return Path(out) if out else Path("runs")


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not key=value (e.g. --set repeats=5)", param_hint="--set")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, metavar="N",
    help="torch intra-op threads per experiment (default: the experiment's own measured best, 1 or 2; "
         "pass 1 on a shared machine, see the README)")



class ExecutorChoice(NamedTuple):
    """``--executor`` and its settings, as given (an executor is made per experiment, at its threads)."""

    kind: str
    workers: int | None
    address: str | None
    gpus: float


def executor_options(command):
    """``--executor local|ray``, ``--workers``, ``--address`` and ``--gpus-per-cell``."""
    command = click.option("--gpus-per-cell", "gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
                           help="GPUs each Ray task holds (fractions share a GPU)")(command)
    command = click.option("--address", default=None, metavar="ADDR",
                           help="join the Ray cluster at ADDR (default: $RAY_ADDRESS, else start a local one)")(command)
    command = click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                           help="cells run at once with --executor ray (default: CPUs / threads)")(command)
    return click.option("--executor", "executor", type=click.Choice(["local", "ray"]), default="local",
                        show_default=True,
                        help="where the cells of an experiment's grid run: this process, or Ray tasks")(command)


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), help="data root (default: $ODEKIT_DATA or ~/.cache/odekit/data)"
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="odekit")
def main() -> None:
    """odekit: faster and more accurate neural ODEs, and the experiments of Xia (2023)."""


@main.command("list")
@data_dir_option
@click.option("--long", "long_", is_flag=True, help="also what each experiment does, its profiles and missing files")
def list_experiments(data_dir: str | None, long_: bool) -> None:
    """List the registered experiments and whether their data is available."""
    from .data import data_root
    from .experiments import EXPERIMENTS

    root = data_root(data_dir)
    table = Table(title=f"odekit experiments (data root: {root})")
    columns = ("name", "thesis", "quick", "data") + (("profiles", "what") if long_ else ())
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col in ("name", "quick"))  # names stay whole: they are typed
    for exp in EXPERIMENTS.values():
        missing = _missing_data(exp, exp.config("quick"), root)
        if not missing:
            data = "[green]available[/]"
        else:
            data = f"[red]missing:[/] {'; '.join(missing)}" if long_ else "[red]missing[/] (--long says what)"
        row = [exp.name, exp.thesis_items, f"~{_minutes(exp.quick_seconds)}", data]
        if long_:
            row += [", ".join(exp.profiles), exp.summary]
        table.add_row(*row)
    out_console.print(table)
    if not long_:
        out_console.print("`odekit run NAME --help` lists an experiment's settings; `odekit list --long` adds details")


class _RunCommand(click.Command):
    """``odekit run``: its help lists the experiments, and with a NAME that experiment's settings."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["odekit.run.args"] = list(args)  # --help is handled while parsing, before NAME is set
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from .experiments import EXPERIMENTS

        names = [a for a in ctx.meta.get("odekit.run.args", []) if not a.startswith("-")]
        experiment = EXPERIMENTS.get(names[0]) if names else None
        if experiment is None:
            with formatter.section("Experiments"):
                formatter.write_dl([(e.name, e.thesis_items) for e in EXPERIMENTS.values()])
            return
        with formatter.section(f"Settings of {experiment.name} (--set KEY=VALUE; defaults of the quick profile)"):
            formatter.write_dl(_settings(experiment))


def _settings(experiment) -> list[tuple[str, str]]:
    """``(name, "type = quick default (smoke …, full …)")`` for each setting of ``experiment``."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(experiment.config_class)
    rows = []
    for f in dataclasses.fields(experiment.config_class):
        if f.name == "profile":
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # e.g. dict fields
        values = {p: experiment.profiles[p].get(f.name, default) for p in experiment.profiles}
        quick = values.get("quick", default)
        others = ", ".join(f"{p} {v!r}" for p, v in values.items() if p != "quick" and v != quick)
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]).replace("typing.", ""))
        rows.append((f.name, f"{kind} = {quick!r}" + (f" ({others})" if others else "")))
    return rows


@main.command()
def methods() -> None:
    """List the solver methods available to solve/odeint."""
    from .solve import METHODS

    table = Table(title="odekit solver methods")
    for col in ("method", "adaptive", "options", "description"):
        table.add_column(col, overflow="fold", no_wrap=col == "method")
    for name in sorted(METHODS):
        m = METHODS[name]
        table.add_row(name, "yes" if m.adaptive else "no", ", ".join(m.options), m.description)
    out_console.print(table)


@main.command(cls=_RunCommand)
@click.argument("name")
@click.option("--profile", type=click.Choice(["smoke", "quick", "full"]), default="quick", show_default=True,
              help="smoke: seconds; quick: minutes on a laptop CPU; full: the thesis protocol")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a config setting (repeatable)")
@data_dir_option
@click.option("--out", type=click.Path(file_okay=False), help="runs folder (default: ./runs)")
@click.option("--seed", type=int, default=None, help="random seed (default: the profile's, 0)")
@click.option("--fresh", is_flag=True,
              help="start a new run even if an unfinished one with this config exists, and compute every grid cell "
                   "again (without it, a grid grown from an earlier run's takes the cells that run finished)")
@threads_option
@executor_options
def run(name: str, profile: str, sets: tuple[str, ...], data_dir: str | None, out: str | None, seed: int | None,
        fresh: bool, threads: int | None, executor: str, workers: int | None, address: str | None,
        gpus: float) -> None:
    """Run experiment NAME; results go to runs/NAME/<timestamp>/."""
    from .data import DataError, data_root
    from .experiments import ConfigError, get

    try:
        experiment = get(name)
        fixed = {"seed": seed} if seed is not None else {}
        config = experiment.config(profile, _parse_sets(sets), **fixed)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    root = data_root(data_dir)
    missing = _missing_data(experiment, config, root)
    if missing and experiment.download is not None:
        console.print(f"{name}: downloading its data into {root} …")
        try:
            experiment.download(root, config)
        except DataError as err:
            raise click.ClickException(str(err)) from None
        missing = _missing_data(experiment, config, root)
    if missing:
        hint = ("" if root.is_dir() else f" (the data root {root} does not exist: point --data-dir or ODEKIT_DATA "
                                         "at the folder that holds the data)")
        raise click.ClickException(f"{name} needs data that is not available: {'; '.join(missing)}{hint}")
    run_dir = _execute(experiment, config, _runs_dir(out), root, resume=not fresh, threads=threads,
                       executor=ExecutorChoice(executor, workers, address, gpus))
    out_console.print(f"results in {run_dir}")


def _missing_data(experiment, config, root: Path) -> list[str]:
    """What data a run of ``experiment`` with ``config`` lacks under ``root``; an unreadable root is
    one clear error."""
    from .data import DataError

    try:
        return experiment.missing_data(root, config)
    except DataError as err:  # its message names the file and the fix
        raise click.ClickException(str(err)) from None
    except ValueError as err:  # a setting naming data that does not exist (an unknown graph)
        raise click.UsageError(f"{experiment.name}: {err}") from None
    except OSError as err:
        raise click.ClickException(
            f"cannot read the data root {root}: {err.strerror or err} ({err.filename or root}); fix its "
            "permissions or point --data-dir / ODEKIT_DATA at a readable folder"
        ) from None


def _execute(experiment, config, runs: Path, root: Path, *, resume: bool = True, take_earlier: bool = True,
             exit_on_interrupt: bool = True, threads: int | None = None,
             executor: ExecutorChoice | None = None) -> Path:
    """Run one experiment; any failure becomes one line naming the cause and the run's traceback log.

    Ctrl-C and SIGTERM leave a resumable run and exit with status 130 (``exit_on_interrupt``;
    otherwise the ``KeyboardInterrupt`` goes on to the caller, ``reproduce``, which writes its report).
    """
    from .experiments import open_run
    from .experiments.executors import ExecutorError, make_executor

    choice = executor or ExecutorChoice("local", None, None, 0.0)
    try:
        cells_on = make_executor(choice.kind, workers=choice.workers, threads=threads or experiment.threads,
                                 gpus=choice.gpus, address=choice.address)
    except ExecutorError as err:
        raise click.UsageError(str(err)) from None
    try:
        handle = open_run(experiment, config, runs, root, resume=resume, take_earlier=take_earlier, console=console,
                          executor=cells_on)
    except OSError as err:
        raise click.ClickException(
            f"cannot create a run folder under {runs}: {err.strerror or err} ({err.filename or runs}); "
            "pass a writable folder with --out"
        ) from None
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or experiment.threads)
    try:
        return handle.execute()
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted:[/] {experiment.name} stopped; the same command resumes {handle.out}")
        if not exit_on_interrupt:
            raise
        sys.exit(130)
    except Exception as err:  # every failure, data or code, ends as one line; the traceback is in the log
        raise click.ClickException(
            f"{experiment.name} failed: {type(err).__name__}: {err} (traceback in {handle.log_path})"
        ) from None
    finally:
        torch.set_num_threads(previous_threads)
        cells_on.close()


@main.command()
@click.option("--quick", is_flag=True, help="quick profile (default)")
@click.option("--full", is_flag=True, help="the thesis protocol (GPU or cluster scale)")
@click.option("--smoke", is_flag=True, help="seconds per experiment: checks the pipeline")
@data_dir_option
@click.option("--out", type=click.Path(file_okay=False), help="runs folder (default: ./runs)")
@click.option("--only", multiple=True, metavar="NAME", help="run only these experiments (repeatable)")
@click.option("--fresh", is_flag=True, help="rerun experiments that already have a complete run of these settings, "
                                            "computing every grid cell again")
@threads_option
@executor_options
def reproduce(quick: bool, full: bool, smoke: bool, data_dir: str | None, out: str | None, only: tuple[str, ...],
              fresh: bool, threads: int | None, executor: str, workers: int | None, address: str | None,
              gpus: float) -> None:
    """Run every experiment whose data is available, cheapest first, then write the report.

    Experiments with a complete run of the same settings on the same data are not run again (the
    report uses that run), so after Ctrl-C the same command finishes the rest; an interrupted
    experiment resumes from its checkpoint. The report is written on interrupt too.
    """
    chosen_profiles = [name for name, on in (("quick", quick), ("full", full), ("smoke", smoke)) if on]
    if len(chosen_profiles) > 1:  # one would silently win: --smoke --full would start the thesis protocol
        raise click.UsageError(f"choose one profile, not {' and '.join('--' + p for p in chosen_profiles)}")
    profile = chosen_profiles[0] if chosen_profiles else "quick"
    from .data import data_root
    from .experiments import EXPERIMENTS, ConfigError, get
    from .report.markdown import build_report

    root, runs = data_root(data_dir), _runs_dir(out)
    try:
        chosen = [get(n) for n in only] if only else list(EXPERIMENTS.values())
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    plan = _reproduce_plan(chosen, profile, runs, root, fresh)
    failures, skipped, reused = [], [], []
    shown: dict[str, Path] = {}  # the run of each experiment that this command ran or reused: the report's
    start = time.time()
    try:
        for i, (experiment, config, _, done, missing) in enumerate(plan, 1):
            if done is not None:
                reused.append(experiment.name)
                shown[experiment.name] = done
                console.print(f"[green]done[/] {experiment.name}: complete run of these settings in {done} "
                              "(--fresh reruns it)")
                continue
            if missing:
                skipped.append(experiment.name)
                console.print(f"[yellow]skip[/] {experiment.name}: data not available ({'; '.join(missing)}); "
                              f"`odekit run {experiment.name}` downloads it where there is internet")
                continue
            # Estimates are quick-profile times: other profiles get no time left.
            left = sum(entry.estimate for entry in plan[i - 1:] if entry.done is None and not entry.missing)
            eta = f" · about {_minutes(left)} left" if profile == "quick" else ""
            console.rule(f"[{i}/{len(plan)}] {experiment.name} ({profile}){eta}")
            try:
                shown[experiment.name] = _execute(experiment, config, runs, root, take_earlier=not fresh,
                                                  exit_on_interrupt=False, threads=threads,
                                                  executor=ExecutorChoice(executor, workers, address, gpus))
            except click.ClickException as err:  # one failed experiment must not stop the others
                failures.append(experiment.name)
                console.print(f"[red]{err.format_message()}[/]")
    except KeyboardInterrupt:
        report = build_report(runs, EXPERIMENTS.values(), shown=shown)
        console.print(f"[yellow]interrupted[/] after {time.time() - start:.0f} s; the same command runs the rest "
                      "(finished experiments are kept)")
        out_console.print(f"report (partial): {report}")
        sys.exit(130)
    report = build_report(runs, EXPERIMENTS.values(), shown=shown)
    ran = len(plan) - len(failures) - len(skipped) - len(reused)
    console.print(f"{ran} ran, {len(reused)} already complete, {len(skipped)} skipped, {len(failures)} failed "
                  f"in {time.time() - start:.0f} s")
    out_console.print(f"report: {report}")
    if failures:
        sys.exit(1)


class PlannedRun(NamedTuple):
    experiment: Any
    config: Any
    estimate: float  # seconds
    done: Path | None  # a complete run of the same settings on the same data
    missing: list[str]  # descriptions of the data it lacks


def _reproduce_plan(chosen: list, profile: str, runs: Path, root: Path, fresh: bool) -> list[PlannedRun]:
    """One :class:`PlannedRun` per experiment, cheapest first.

    The estimate is the time this machine's latest complete run of the profile took (its runs
    folder), else the experiment's measured quick-profile time on the 2-core reference machine.
    """
    from .experiments.base import config_to_dict
    from .experiments.rundir import latest_complete

    plan = []
    for experiment in chosen:
        config = experiment.config(profile)
        settings = json.loads(json.dumps(config_to_dict(config)))
        done = latest_complete(runs, experiment.name, settings, root)
        estimate = done[1].seconds if done is not None and done[1].seconds else experiment.quick_seconds
        plan.append(PlannedRun(experiment, config, estimate, None if fresh or done is None else done[0],
                               _missing_data(experiment, config, root)))
    return sorted(plan, key=lambda entry: entry.estimate)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


@main.command()
@click.option("--runs", "runs", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="runs folder to read")
@click.option("--out", type=click.Path(dir_okay=False), help="report file (default: RUNS/report.md)")
def report(runs: str, out: str | None) -> None:
    """Build the markdown report from the latest complete run of each experiment."""
    from .experiments import EXPERIMENTS
    from .report.markdown import build_report

    runs_path = Path(runs)
    if not runs_path.is_dir():
        raise click.ClickException(f"no runs folder at {runs_path}; run `odekit run NAME` or `odekit reproduce` first")
    out_console.print(f"report: {build_report(runs_path, EXPERIMENTS.values(), Path(out) if out else None)}")


if __name__ == "__main__":
    main()
