"""Grids of cells on the local and the Ray executor: the same records, resume without repeats, and
a worker killed mid-cell retried with nothing lost or duplicated."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from odekit.experiments import EXPERIMENTS, Experiment, ExperimentConfig, execute, get, register
from odekit.experiments.executors import CellError, ExecutorError, LocalExecutor, RayExecutor, make_executor
from odekit.experiments.grid import cell_advance, cell_log, run_grid, unfinished_path
from odekit.experiments.rundir import RunStatus, code_fingerprint, runs_sharing_cells
from odekit.report.records import Key, read_results

try:
    import ray

    # Ray workers import this module's functions by value (tests/ is not a package they can import).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
except ImportError:  # the Ray tests skip; the local ones still run
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed")


@dataclass(frozen=True)
class Square:
    n: int

    @property
    def key(self) -> str:
        return f"n={self.n}"


@dataclass
class SquaresConfig(ExperimentConfig):
    items: int = 6
    kill_at: int = -1  # the worker running this cell dies on its first attempt
    interrupt_at: int = -1  # Ctrl-C when this cell's record arrives, on the first attempt
    marks: str = ""  # folder where attempts leave marks (shared by the workers of one machine)
    scale: int = 1  # a setting every cell's record depends on


def square(config: SquaresConfig, cell: Square) -> dict:
    """The cell's record; each attempt leaves a mark, and the first attempt at ``kill_at`` kills its process."""
    marks = Path(config.marks)
    attempt = len(list(marks.glob(f"{cell.n}-*"))) + 1
    (marks / f"{cell.n}-{attempt}-{os.getpid()}").touch()
    if cell.n == config.kill_at and attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"n": cell.n, "square": config.scale * cell.n ** 2, "threads": torch.get_num_threads()}


def squares_run(config: SquaresConfig, ctx) -> None:
    cells = [Square(n) for n in range(config.items)]

    def describe(cell, record):
        if cell.n == config.interrupt_at and not ctx.resumed:
            raise KeyboardInterrupt
        return f"{cell.key}: {record['square']}"

    done = run_grid(ctx, cells, functools.partial(square, config), "squares", describe)
    ctx.record(Key("total"), sum(r["square"] for r in done.values()))


SQUARES = Experiment(name="squares", title="Squares", thesis_items="none", config_class=SquaresConfig,
                     profiles={"smoke": {}, "quick": {}, "full": {}}, run=squares_run)


def records(run_dir: Path) -> dict[str, dict]:
    return json.loads((run_dir / "checkpoint.json").read_text())["cells"]


@needs_ray
def test_a_killed_worker_is_retried_and_nothing_is_lost_or_repeated(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    config = SquaresConfig(kill_at=2, marks=str(marks))
    executor = RayExecutor(workers=2, threads=1)
    try:
        run_dir = execute(SQUARES, config, tmp_path / "runs", tmp_path, executor=executor)
    finally:
        executor.close()
    got = records(run_dir)
    assert got == {f"n={n}": {"n": n, "square": n * n, "threads": 1} for n in range(6)}
    attempts = sorted(p.name.split("-")[:2] for p in marks.iterdir())
    assert [a for a in attempts if a[0] == "2"] == [["2", "1"], ["2", "2"]]  # killed once, retried once
    assert len(attempts) == 7  # every other cell ran exactly once
    assert read_results(run_dir)[Key("total")] == sum(n * n for n in range(6))


def test_an_interrupted_grid_resumes_with_only_the_unfinished_cells(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    config = SquaresConfig(interrupt_at=3, marks=str(marks))
    with pytest.raises(KeyboardInterrupt):
        execute(SQUARES, config, tmp_path / "runs", tmp_path, executor=LocalExecutor())
    first = {p.name.split("-")[0] for p in marks.iterdir()}
    assert first == {"0", "1", "2", "3"}  # cell 3 finished; its record was written before the interrupt
    run_dir = execute(SQUARES, config, tmp_path / "runs", tmp_path, executor=LocalExecutor())
    ran = sorted(int(p.name.split("-")[0]) for p in marks.iterdir())
    assert ran == [0, 1, 2, 3, 4, 5]  # no cell twice
    assert sorted(records(run_dir)) == [f"n={n}" for n in range(6)]


def test_a_grown_grid_takes_the_cells_earlier_runs_of_the_same_settings_finished(tmp_path, capsys):
    """More cells (``items`` is a grid field) reuse finished ones; another setting, data root or
    ``resume=False`` computes everything."""
    growing = dataclasses.replace(SQUARES, name="growing", grid_fields=("items", "interrupt_at"))
    marks = tmp_path / "marks"
    marks.mkdir()

    def run(data: str = "data", resume: bool = True, **settings):
        before = {p.name for p in marks.iterdir()}
        run_dir = execute(growing, SquaresConfig(marks=str(marks), **settings), tmp_path / "runs", tmp_path / data,
                          resume=resume)
        return run_dir, sorted(int(p.split("-")[0]) for p in {p.name for p in marks.iterdir()} - before)

    small, ran = run(items=3)
    assert ran == [0, 1, 2]
    with pytest.raises(KeyboardInterrupt):  # an unfinished run shares its finished cells too
        run(items=5, interrupt_at=3)
    capsys.readouterr()
    grown, ran = run(items=6)
    assert ran == [4, 5]  # 0-3 from the interrupted run (which took 0-2 from the first)
    assert "took 4 finished cells from earlier run" in " ".join(capsys.readouterr().err.split())
    assert records(grown) == {f"n={n}": {"n": n, "square": n * n, "threads": torch.get_num_threads()}
                              for n in range(6)}
    assert read_results(grown)[Key("total")] == sum(n * n for n in range(6))
    assert sorted(records(small)) == ["n=0", "n=1", "n=2"]  # the earlier runs are left as they were
    assert run(items=6)[1] == []  # a smaller or equal grid computes nothing
    scaled, ran = run(items=6, scale=2)
    assert ran == list(range(6)) and records(scaled)["n=5"]["square"] == 50
    assert run(items=6, data="other")[1] == list(range(6))
    assert run(items=6, resume=False)[1] == list(range(6))
    for folder in (tmp_path / "runs" / "growing").iterdir():  # as if an older odekit had computed them all
        status = RunStatus.read(folder)
        status.code = "older"
        status.write(folder)
    assert run(items=6)[1] == list(range(6))


def test_a_resumed_run_whose_code_changed_shares_no_cells(tmp_path):
    growing = dataclasses.replace(SQUARES, name="growing", grid_fields=("items",))
    config = SquaresConfig(items=4, interrupt_at=1, marks=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        execute(growing, config, tmp_path / "runs", tmp_path)
    (folder,) = (tmp_path / "runs" / "growing").iterdir()
    assert RunStatus.read(folder).code == code_fingerprint()
    status = RunStatus.read(folder)
    status.code = "older"
    status.write(folder)
    assert execute(growing, config, tmp_path / "runs", tmp_path) == folder  # resumed all the same
    assert RunStatus.read(folder).code == "mixed"
    assert runs_sharing_cells(tmp_path / "runs", "growing", json.loads(json.dumps(dataclasses.asdict(config))),
                              tmp_path, ("items",)) == []


def test_fresh_computes_every_cell_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from odekit.cli import main

    register(dataclasses.replace(SQUARES, name="growing", grid_fields=("items",)))
    marks = tmp_path / "marks"
    marks.mkdir()

    def ran(*command: str) -> list[int]:
        before = set(marks.iterdir())
        result = CliRunner().invoke(main, [*command, "--out", str(tmp_path / "runs"), "--data-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        return sorted(int(p.name.split("-")[0]) for p in set(marks.iterdir()) - before)

    try:
        settings = ["--set", f"marks={marks}"]
        assert ran("run", "growing", *settings, "--set", "items=3") == [0, 1, 2]
        assert ran("run", "growing", *settings, "--set", "items=6") == [3, 4, 5]
        assert ran("run", "growing", *settings, "--set", "items=6", "--fresh") == list(range(6))
        SQUARES.profiles["quick"]["marks"] = str(marks)
        assert ran("reproduce", "--only", "growing") == []  # the complete run of these settings is reused
        assert ran("reproduce", "--only", "growing", "--fresh") == list(range(6))
    finally:
        SQUARES.profiles["quick"].pop("marks", None)
        del EXPERIMENTS["growing"]


@pytest.mark.parametrize("grow", [("splits", "1", "2"), ("models", "grand-l", "grand-l,grand++-l,gcn")],
                         ids=["splits", "models"])
def test_a_chapter_4_grid_grown_from_a_smaller_run_gives_the_records_of_a_fresh_run(tmp_path, data_root, grow,
                                                                                  capsys):
    """A cell's record does not depend on the grid around it, so taking it from a run with fewer splits
    or models (``grid_fields``) gives what training it again would."""
    field, small, large = grow
    experiment = get("grand_labels")

    def run(value: str, resume: bool = True) -> Path:
        return execute(experiment, experiment.config("smoke", {field: value}), tmp_path / "runs", data_root,
                       resume=resume)

    run(small)
    capsys.readouterr()
    grown = run(large)
    assert f"took {3 if field == 'splits' else 2} finished cells" in capsys.readouterr().err
    fresh = run(large, resume=False)
    assert len(records(fresh)) == 6  # 3 models × 2 splits, one label rate, one seed
    assert without_times(records(grown)) == without_times(records(fresh))
    assert untimed_results(grown) == untimed_results(fresh)


def without_times(cells: dict[str, dict]) -> dict[str, dict]:
    return {key: {k: v for k, v in record.items() if k != "seconds"} for key, record in cells.items()}


def untimed_results(run_dir: Path) -> dict:
    """The run's records without its wall times (the only numbers that differ between two runs)."""
    return {key: value for key, value in read_results(run_dir).items() if "seconds" not in key.metric}


@needs_ray
@pytest.mark.slow
@pytest.mark.parametrize("name", ["grand_labels", "pointcloud", "plane_vibration", "diffusion1d"])
def test_ray_with_two_workers_gives_the_local_executors_records(tmp_path, data_root, name):
    experiment = get(name)
    config = experiment.config("smoke")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task runs: the same arithmetic
    executor = RayExecutor(workers=2, threads=1)
    try:
        local = execute(experiment, config, tmp_path / "local", data_root, executor=LocalExecutor())
        distributed = execute(experiment, config, tmp_path / "ray", data_root, executor=executor)
    finally:
        executor.close()
        torch.set_num_threads(threads)
    assert untimed_results(local) and untimed_results(distributed) == untimed_results(local)
    if name == "grand_labels":
        assert len(records(local)) == 6 and without_times(records(distributed)) == without_times(records(local))
    # a cell's per-epoch resume state is gone once it finished, wherever it ran
    assert not list(distributed.glob("unfinished_*"))


def test_a_cell_named_twice_runs_once(tmp_path):
    def twice(config, ctx):
        done = run_grid(ctx, [Square(1), Square(2), Square(1)], functools.partial(square, config), "twice")
        ctx.record(Key("keys"), sorted(done))

    experiment = Experiment(name="twice", title="Twice", thesis_items="none", config_class=SquaresConfig,
                            profiles={"smoke": {}, "quick": {}, "full": {}}, run=twice)
    run_dir = execute(experiment, SquaresConfig(marks=str(tmp_path)), tmp_path / "runs", tmp_path)
    assert read_results(run_dir)[Key("keys")] == ["n=1", "n=2"]
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*-*-*")) == ["1", "2"]


def slow_or_failing(config: SquaresConfig, cell: Square) -> dict:
    """Cell -1 fails at once; the others mark their end after 4 s."""
    if cell.n < 0:
        raise ValueError("no negative squares")
    time.sleep(4)
    (Path(config.marks) / f"finished-{cell.n}").touch()
    return {"n": cell.n}


@needs_ray
def test_a_cell_that_raises_on_ray_is_named_in_one_line_and_stops_the_others(tmp_path):
    def failing(config, ctx):
        run_grid(ctx, [Square(1), Square(-1)], functools.partial(slow_or_failing, config), "failing")

    experiment = Experiment(name="failing", title="Failing", thesis_items="none", config_class=SquaresConfig,
                            profiles={"smoke": {}, "quick": {}, "full": {}}, run=failing)
    executor = RayExecutor(workers=2, threads=1)
    try:
        with pytest.raises(CellError, match=r"cell n=-1 failed on Ray: ValueError: no negative squares"):
            execute(experiment, SquaresConfig(marks=str(tmp_path)), tmp_path / "runs", tmp_path, executor=executor)
        assert not ray.is_initialized()  # the run's own cluster is gone before the run lets go of its folder
    finally:
        executor.close()
    time.sleep(6)
    assert not list(tmp_path.glob("finished-*"))  # cell 1 was stopped, not left to finish


@needs_ray
def test_a_grid_with_nothing_left_to_compute_starts_no_cluster():
    executor = RayExecutor(workers=1, threads=1)
    assert list(executor.map(square, [])) == [] and not ray.is_initialized()


def test_executor_settings_are_checked():
    with pytest.raises(ExecutorError, match="go with --executor ray"):
        make_executor("local", workers=2)
    with pytest.raises(ExecutorError, match="unknown executor"):
        make_executor("slurm")
    with pytest.raises(ExecutorError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        make_executor("ray", address="127.0.0.1:1")
    executor = make_executor("ray", threads=2)
    assert isinstance(executor, RayExecutor) and executor.workers >= 1 and executor.threads == 2


class _RecordingContext:
    """What run_grid uses of a RunContext, recording the progress bar's moves and the log."""

    def __init__(self, executor, out: Path = Path("/nonexistent")) -> None:
        self.executor, self.out, self.checkpoint, self.moves, self.lines = executor, out, {}, [], []
        self.earlier = ()
        self.saved_with: list[list[str]] = []  # the unfinished states present at each checkpoint save

    @contextlib.contextmanager
    def progress(self, total, description):
        self.total = total
        yield self.moves.append

    def save_checkpoint(self) -> None:
        self.saved_with.append(sorted(p.name for p in self.out.glob("unfinished_*")))

    def log(self, message: str) -> None:
        self.lines.append(message)


def epochs_of(cell: Square) -> dict:
    """A cell of ``cell.n`` epochs that reports each one (and one line of news) as it goes."""
    for epoch in range(cell.n):
        cell_log(f"{cell.key} epoch {epoch}")
        cell_advance()
    return {"epochs": cell.n}


def test_a_long_cell_moves_the_grid_progress_bar_as_it_goes_and_logs_its_news():
    ctx = _RecordingContext(LocalExecutor())
    ctx.checkpoint["cells"] = {"n=1": {"epochs": 1}}  # finished earlier: counted at once
    done = run_grid(ctx, [Square(1), Square(2), Square(3)], epochs_of, "epochs", size=lambda cell: cell.n)
    assert done == {f"n={n}": {"epochs": n} for n in (1, 2, 3)}
    assert ctx.total == 6 and sum(ctx.moves) == 6
    assert ctx.moves == [1, 1, 1, 0, 1, 1, 1, 0]  # per epoch, nothing left over when each cell ends
    assert ctx.lines == ["n=2 epoch 0", "n=2 epoch 1", "n=3 epoch 0", "n=3 epoch 1", "n=3 epoch 2"]
    cell_advance()  # outside a grid: nothing to move, no error
    cell_log("outside")
    assert sum(ctx.moves) == 6 and ctx.lines[-1] == "n=3 epoch 2"


@needs_ray
def test_on_ray_a_long_cell_moves_the_bar_by_its_size_when_it_finishes():
    ctx = _RecordingContext(RayExecutor(workers=1, threads=1))
    try:
        done = run_grid(ctx, [Square(2), Square(3)], epochs_of, "epochs", size=lambda cell: cell.n)
    finally:
        ctx.executor.close()
    assert done == {"n=2": {"epochs": 2}, "n=3": {"epochs": 3}}
    assert ctx.moves == [0, 2, 3] and ctx.lines == []  # the worker's news stays there


def test_grids_of_one_run_keep_their_records_apart_by_section():
    ctx = _RecordingContext(LocalExecutor())
    run_grid(ctx, [Square(1)], epochs_of, "first", section="first")
    run_grid(ctx, [Square(2)], epochs_of, "second", section="second")
    assert ctx.checkpoint == {"first": {"n=1": {"epochs": 1}}, "second": {"n=2": {"epochs": 2}}}


def keeps_state(out: Path, cell: Square) -> dict:
    """A cell that leaves the state of its unfinished work behind, as a long training does."""
    unfinished_path(out, cell).write_text("state")
    return {"n": cell.n}


def test_a_cells_unfinished_state_is_removed_only_after_its_record_is_saved(tmp_path):
    ctx = _RecordingContext(LocalExecutor(), tmp_path)
    ctx.checkpoint["cells"] = {"n=1": {"n": 1}}
    unfinished_path(tmp_path, Square(1)).write_text("left by a run killed after saving cell 1")
    run_grid(ctx, [Square(1), Square(2)], functools.partial(keeps_state, tmp_path), "states")
    assert ctx.saved_with == [["unfinished_n=2.pt"]]  # present while cell 2's record was written
    assert not list(tmp_path.glob("unfinished_*"))  # then gone, and the finished cell's leftover too
