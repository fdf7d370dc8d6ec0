"""Run folders under faults: concurrent starts, live owners, kills, SIGTERM, moved data roots, bad --set."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from odekit.cli import main
from odekit.experiments import ConfigError, execute, get
from odekit.experiments.rundir import RunLock, RunStatus, new_run_dir
from odekit.report.records import Key, read_results

ROOT = Path(__file__).resolve().parents[1]
# pointcloud's smoke profile trains five small models, checkpointing after each, in a few seconds.
POINTCLOUD = ["pointcloud", "--profile", "smoke", "--set", "runs=2"]


def odekit_command(*args: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "odekit", "run", *args, "--out", str(out)]


def spawn(*args: str, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(odekit_command(*args, out=out), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_dirs(runs: Path, name: str) -> list[Path]:
    return sorted(p for p in (runs / name).iterdir() if p.is_dir())


def deterministic_results(run_dir: Path) -> dict:
    """Everything a pointcloud run computes, without its wall-clock measurements."""
    histories = json.loads((run_dir / "checkpoint.json").read_text())["histories"]
    table = (run_dir / "tables" / "pointcloud.csv").read_text().splitlines()
    return {
        "histories": {k: {m: v for m, v in h.items() if m != "seconds"} for k, h in histories.items()},
        "table": [",".join(line.split(",")[:-1]) for line in table],  # the last column is ms per iteration
        "results": json.loads((run_dir / "results.json").read_text()),
    }


def wait_for_status(folder: Path, proc: subprocess.Popen, name: str = "status.json") -> None:
    """Wait until the run ``proc`` started in ``folder`` has written ``name``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if folder.is_dir() and any((run / name).exists() for run in run_dirs(folder.parent, folder.name)):
            return
        time.sleep(0.02)
    raise AssertionError(f"no {name} under {folder}: {proc.communicate()[0] if proc.poll() is not None else ''}")


def wait_for_checkpoints(folder: Path, proc: subprocess.Popen, jobs: int) -> None:
    """Wait until the pointcloud run ``proc`` has checkpointed ``jobs`` finished jobs (0: it has started)."""
    wait_for_status(folder, proc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        (run,) = run_dirs(folder.parent, folder.name)
        try:
            done = len(json.loads((run / "checkpoint.json").read_text())["histories"])
        except FileNotFoundError:
            done = 0
        if done >= jobs:
            return
        time.sleep(0.01)


def test_run_folders_made_in_the_same_second_are_distinct(tmp_path):
    folders = [new_run_dir(tmp_path, "x") for _ in range(5)]
    assert len(set(folders)) == 5 and all(f.is_dir() for f in folders)


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders(tmp_path):
    procs = [spawn(*POINTCLOUD[:3], "--set", "iterations=1", out=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folders = run_dirs(tmp_path, "pointcloud")
    assert len(folders) == 2
    assert {line for o in outputs for line in o.splitlines() if line.startswith("results in")} == {
        f"results in {f}" for f in folders}
    for folder in folders:
        assert RunStatus.read(folder).state == "complete"
        assert json.loads((folder / "config.json").read_text())["iterations"] == 1


def _unfinished(tmp_path, exp, data_root) -> Path:
    config = exp.config("smoke", {"fail_at": "1"})
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(exp, config, tmp_path, data_root)
    (folder,) = run_dirs(tmp_path, exp.name)
    return folder


@pytest.mark.slow
def test_a_live_run_is_never_resumed(tmp_path, counting_experiment):
    folder = _unfinished(tmp_path, counting_experiment, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from odekit.experiments.rundir import RunLock
        assert RunLock({str(folder)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="simulated crash"):  # a fresh run, so it crashes again
            execute(counting_experiment, counting_experiment.config("smoke", {"fail_at": "1"}), tmp_path, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    first, other = run_dirs(tmp_path, "counting")
    assert first == folder and RunStatus.read(folder).state == "failed"  # untouched
    assert json.loads((folder / "checkpoint.json").read_text())["done"] == [0]
    # Once the owner is gone, both unfinished runs resume, newest first.
    config = counting_experiment.config("smoke", {"fail_at": "1"})
    assert [execute(counting_experiment, config, tmp_path, tmp_path) for _ in range(2)] == [other, folder]
    assert RunStatus.read(folder).state == RunStatus.read(other).state == "complete"


def test_resume_needs_the_same_data_root_and_cleans_partial_writes(tmp_path, counting_experiment):
    folder = _unfinished(tmp_path, counting_experiment, tmp_path / "data_a")
    crashing = counting_experiment.config("smoke", {"fail_at": "1"})
    assert RunStatus.read(folder).data_root == str(tmp_path / "data_a")
    leftover = folder / ".checkpoint.json.abc123.tmp"
    leftover.write_text("{half")
    with pytest.raises(RuntimeError, match="simulated crash"):  # a fresh run on the other root
        execute(counting_experiment, crashing, tmp_path, tmp_path / "data_b")
    assert len(run_dirs(tmp_path, "counting")) == 2 and leftover.exists()
    resumed = execute(counting_experiment, crashing, tmp_path, tmp_path / "data_a")
    assert resumed == folder and not leftover.exists()
    status = RunStatus.read(folder)
    assert status.state == "complete" and status.attempts == 2


def test_a_failed_run_keeps_its_traceback(tmp_path, counting_experiment):
    folder = _unfinished(tmp_path, counting_experiment, tmp_path)
    status = RunStatus.read(folder)
    assert status.state == "failed" and status.error == "RuntimeError: simulated crash"
    log = (folder / status.log).read_text()
    assert "Traceback (most recent call last)" in log and "_counting_run" in log


@pytest.mark.slow
@pytest.mark.parametrize("executor", [(), ("--executor", "ray", "--workers", "1")], ids=["local", "ray"])
def test_sigterm_interrupts_like_ctrl_c_and_resume_keeps_the_clock(tmp_path, executor):
    first = spawn(*POINTCLOUD, *executor, out=tmp_path)
    wait_for_status(tmp_path / "pointcloud", first, "checkpoint.json")
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output
    assert "the same command resumes" in output
    (folder,) = run_dirs(tmp_path, "pointcloud")
    interrupted = RunStatus.read(folder)
    assert interrupted.state == "interrupted" and interrupted.owner["pid"] == first.pid
    second = spawn(*POINTCLOUD, *executor, out=tmp_path)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0 and "resuming" in output, output
    final = RunStatus.read(folder)
    assert final.state == "complete" and final.attempts == 2 and final.started == interrupted.started
    assert final.seconds >= interrupted.seconds >= 0 and final.seconds > 0


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_to_the_uninterrupted_results(tmp_path):
    """Fault injection: kill -9 at a random moment, rerun the same command, compare everything computed.

    The moment is drawn as "after the k-th checkpoint (k random), then a random delay", so kills
    land across the whole run: between jobs, inside atomic writes, while the figures are drawn.
    """
    reference = spawn(*POINTCLOUD, out=tmp_path / "reference")
    assert reference.wait(timeout=300) == 0
    (reference_dir,) = run_dirs(tmp_path / "reference", "pointcloud")
    expected = deterministic_results(reference_dir)
    jobs = len(expected["histories"])
    draw = random.Random(20)
    for seed in range(3):
        runs = tmp_path / f"killed{seed}"
        victim = spawn(*POINTCLOUD, out=runs)
        wait_for_checkpoints(runs / "pointcloud", victim, draw.randrange(jobs))
        time.sleep(draw.uniform(0.0, 0.3))
        victim.kill()
        victim.wait()
        resumed = spawn(*POINTCLOUD, out=runs)
        output = resumed.communicate(timeout=300)[0]
        assert resumed.returncode == 0, output
        folders = run_dirs(runs, "pointcloud")
        if RunStatus.read(folders[0]).state != "complete" or len(folders) == 1:
            # Killed before it finished: the same folder was resumed, not a new one started.
            assert len(folders) == 1 and "resuming" in output, (seed, folders)
        for folder in folders:
            assert deterministic_results(folder) == expected, seed
            assert not list(folder.rglob(".*.tmp"))


def test_a_killed_run_is_marked_killed_then_resumed(tmp_path, counting_experiment):
    folder = _unfinished(tmp_path, counting_experiment, tmp_path)
    status = RunStatus.read(folder)
    status.state = "running"  # what a SIGKILL leaves behind
    status.write(folder)
    lock = RunLock(folder)
    assert lock.acquire()  # nobody holds it: its owner is gone
    lock.release()
    other = counting_experiment.config("smoke", {"fail_at": "1", "items": "4"})  # any start of this experiment looks
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(counting_experiment, other, tmp_path, tmp_path)
    killed = RunStatus.read(folder)
    assert killed.state == "killed" and f"pid {killed.owner['pid']}" in killed.error
    crashing = counting_experiment.config("smoke", {"fail_at": "1"})
    assert execute(counting_experiment, crashing, tmp_path, tmp_path) == folder
    assert RunStatus.read(folder).state == "complete"


@pytest.mark.parametrize("setting,message", [
    ("grid_sizes=[16.9,32.9]", "16.9 is not a whole number"),
    ("grid_sizes=16.5", "is not a whole number"),
    ("step_sizes=", "expected one or more values"),
    ("step_sizes=[]", "expected one or more values"),
])
def test_set_values_are_never_truncated_or_empty(setting, message):
    key, value = setting.split("=", 1)
    with pytest.raises(ConfigError, match=message):
        get("diffusion1d").config("smoke", {key: value})


def test_whole_numbers_written_as_floats_are_accepted():
    config = get("diffusion1d").config("smoke", {"grid_sizes": "[16.0, 32]"})
    assert config.grid_sizes == (16, 32) and all(type(n) is int for n in config.grid_sizes)


def test_names_with_typos_get_a_suggestion(tmp_path):
    result = CliRunner().invoke(main, ["run", "pointclod", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'pointcloud'" in result.output
    result = CliRunner().invoke(main, ["reproduce", "--only", "work_precison", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'work_precision'" in result.output
    result = CliRunner().invoke(main, ["run", "pointcloud", "--set", "iteration=3", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'iterations'" in result.output


def test_a_bad_set_value_leaves_no_run_folder(tmp_path):
    result = CliRunner().invoke(main, ["run", "diffusion1d", "--profile", "smoke", "--set", "step_sizes=",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2 and "expected one or more values" in result.output
    assert not (tmp_path / "diffusion1d").exists()


def test_an_unwritable_runs_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["run", "pointcloud", "--profile", "smoke", "--out", str(blocker / "runs")])
    assert result.exit_code == 1
    assert "cannot create a run folder" in result.output and "--out" in result.output
    assert "Traceback" not in result.output


def test_a_crashing_experiment_is_one_line_with_the_log(tmp_path, counting_experiment):
    result = CliRunner().invoke(main, ["run", "counting", "--set", "fail_at=1", "--out", str(tmp_path)])
    assert result.exit_code == 1
    (folder,) = run_dirs(tmp_path, "counting")
    assert f"counting failed: RuntimeError: simulated crash (traceback in {folder / 'error.log'})" in result.output
    assert "Traceback" not in result.output


def test_a_truncated_data_file_is_one_line_naming_it(tmp_path):
    """A cut-off MNIST .gz used to print only "Aborted!" (click reads EOFError as Ctrl-D)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(os.environ.get("ODEKIT_DATA", ROOT.parent / "shared" / "data")) / "mnist", data / "mnist")
    images = data / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:5000])
    result = CliRunner().invoke(main, ["run", "nfe_vs_tolerance", "--profile", "smoke", "--data-dir", str(data),
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert "Aborted" not in result.output and "Traceback" not in result.output
    assert str(images) in result.output.replace("\n", "")
    (folder,) = run_dirs(tmp_path / "runs", "nfe_vs_tolerance")
    log = (folder / "error.log").read_text()
    assert "DataCorruptError" in log and "EOFError" in log


def test_reproduce_reports_on_interrupt_then_finishes_the_rest_then_reuses_it(tmp_path, counting_experiment):
    counting_experiment.profiles["quick"] = {"interrupt_at": 2}
    command = ["reproduce", "--only", "counting", "--out", str(tmp_path)]
    first = CliRunner().invoke(main, command)
    assert first.exit_code == 130 and "report (partial)" in first.output
    assert (tmp_path / "report.md").exists()
    second = CliRunner().invoke(main, command)
    assert second.exit_code == 0 and "resuming" in second.output and "1 ran" in second.output
    third = CliRunner().invoke(main, command)
    assert third.exit_code == 0 and "0 ran, 1 already complete" in third.output
    assert len([p for p in (tmp_path / "counting").iterdir() if p.is_dir()]) == 1
    fresh = CliRunner().invoke(main, command + ["--fresh"])
    assert fresh.exit_code == 130  # a new run: interrupted again at item 2


def test_reproduce_runs_cheap_experiments_first():
    from odekit.cli import _reproduce_plan
    from odekit.experiments import EXPERIMENTS

    plan = _reproduce_plan(list(EXPERIMENTS.values()), "quick", Path("/nonexistent-runs"), Path("/nonexistent"), False)
    estimates = [entry.estimate for entry in plan]
    assert estimates == sorted(estimates) and plan[0].experiment.name == "stiff_scalar"
    # what lacks data is known up front, so the time left leaves it out
    missing = {entry.experiment.name: entry.missing for entry in plan}
    assert missing["grand_labels"] and missing["walker2d"] and not missing["stiff_scalar"]


@pytest.mark.parametrize("flag,expected", [([], 1), (["--threads", "2"], 2)])
def test_runs_use_the_experiments_threads_or_the_flag(tmp_path, counting_experiment, flag, expected):
    before = torch.get_num_threads()
    result = CliRunner().invoke(main, ["run", "counting", "--out", str(tmp_path), *flag])
    assert result.exit_code == 0, result.output
    (run,) = [p for p in (tmp_path / "counting").iterdir() if p.is_dir()]
    assert read_results(run)[Key("threads")] == expected
    assert torch.get_num_threads() == before


def test_list_is_compact_and_run_help_lists_experiments_and_settings():
    compact = CliRunner().invoke(main, ["list"])
    long = CliRunner().invoke(main, ["list", "--long"])
    assert compact.exit_code == 0 and long.exit_code == 0
    assert len(compact.output.splitlines()) < 0.5 * len(long.output.splitlines())
    general = CliRunner().invoke(main, ["run", "--help"])
    assert "Experiments:" in general.output and "diffusion1d" in general.output and "stiff_scalar" in general.output
    specific = CliRunner().invoke(main, ["run", "diffusion1d", "--help"])
    assert "Settings of diffusion1d" in specific.output and "grid_sizes" in specific.output
    assert "convergence_iters    int = 300 (smoke 50)" in specific.output
    graph = CliRunner().invoke(main, ["run", "hb_grand", "--help"])  # a field with a default factory
    assert "extra_options" in graph.output and "dict = {}" in graph.output and "MISSING" not in graph.output
