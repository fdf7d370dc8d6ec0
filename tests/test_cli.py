"""The command line end to end: run an experiment's smoke profile, resume, and build the report."""

import csv
import json

import pytest
from click.testing import CliRunner

from odekit.cli import main
from odekit.experiments import EXPERIMENTS, Experiment, ExperimentConfig, execute, register
from odekit.report.records import Key, Labels, Metric, read_results


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


@pytest.mark.slow
def test_run_work_precision_smoke_then_report(tmp_path):
    runs = tmp_path / "runs"
    result = invoke("run", "work_precision", "--profile", "smoke", "--out", str(runs), "--set", "repeats=1")
    assert result.exit_code == 0, result.output
    (run_dir,) = (runs / "work_precision").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "complete" and status["profile"] == "smoke"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["repeats"] == 1 and config["profile"] == "smoke"
    rows = (run_dir / "tables" / "work_precision.csv").read_text().splitlines()
    assert rows[0] == "problem,library,method,setting,error,nfe,wall_s"
    methods = {line.split(",")[2] for line in rows[1:]}
    assert {"euler", "rk4", "dopri5", "tsit5", "dopri8"} <= methods
    for line in rows[1:]:
        problem, library, method, setting, error, nfe, wall = line.split(",")
        assert float(error) >= 0 and int(nfe) > 0 and float(wall) > 0
    pngs = list((run_dir / "figures").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    results = read_results(run_dir)
    nfe_ratios = [v for k, v in results.items() if k.metric == "nfe_ratio" and k.model == "dopri5"]
    assert nfe_ratios and all(0.85 <= r <= 1.15 for r in nfe_ratios)

    result = invoke("report", "--runs", str(runs))
    assert result.exit_code == 0, result.output
    report = (runs / "report.md").read_text()
    assert "## Work–precision of the explicit solvers (`work_precision`)" in report
    assert "figures/work_precision_van_der_pol.png" in report
    assert "| model | dataset | at | metric | odekit | thesis | source | verdict |" in report
    assert "| dopri5 | van_der_pol |  | NFE odekit / torchdiffeq (median over tolerances) |" in report


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, counting_experiment):
    config = counting_experiment.config("smoke", {"fail_at": "3"})
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(counting_experiment, config, tmp_path, tmp_path)
    (run_dir,) = (tmp_path / "counting").iterdir()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    assert json.loads((run_dir / "checkpoint.json").read_text())["done"] == [0, 1, 2]
    resumed = execute(counting_experiment, config, tmp_path, tmp_path)
    assert resumed == run_dir
    assert json.loads((run_dir / "checkpoint.json").read_text())["done"] == [0, 1, 2, 3, 4]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    # A finished run is never reused: the next run gets a new folder (and, fresh, crashes again).
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(counting_experiment, config, tmp_path, tmp_path)
    assert len(list((tmp_path / "counting").iterdir())) == 2


@pytest.mark.parametrize("args,message", [
    (["run", "no_such_experiment"], "unknown experiment"),
    (["run", "work_precision", "--set", "nonsense"], "is not key=value"),
    (["run", "work_precision", "--set", "repeats=many"], "cannot read --set repeats"),
    (["run", "work_precision", "--set", "colour=red"], "has no setting 'colour'"),
    (["run", "work_precision", "--profile", "huge"], "Invalid value for '--profile'"),
    (["report", "--runs", "/nonexistent/runs"], "no runs folder"),
    (["run", "work_precision", "--workers", "2"], "go with --executor ray"),
    (["run", "work_precision", "--executor", "slurm"], "Invalid value for '--executor'"),
    (["run", "work_precision", "--set", "repeats=abc"], "'abc' is not a number"),
    (["reproduce", "--smoke", "--full"], "choose one profile, not --full and --smoke"),
    (["run", "grand_labels", "--set", "datasets=nosuchgraph"], "grand_labels: unknown dataset(s) ['nosuchgraph']"),
    (["run", "grand_labels", "--set", "splits=0"], "grand_labels: splits, seeds and time_points must be at least 1"),
    (["run", "grand_t_search", "--set", "models=grand-l,gcn"], "grand_t_search searches the depth T"),
    (["run", "grand_proximal", "--set", "dataset=nosuch"], "grand_proximal: unknown graph 'nosuch'"),
    (["run", "stiff_scalar", "--executor", "ray", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
])
def test_bad_arguments_exit_non_zero_with_a_message(args, message, tmp_path):
    """One line saying what was wrong, and no run folder for a setting that could never run."""
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)] if args[0] in ("run", "reproduce") else args)
    assert result.exit_code != 0 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_a_missing_data_root_is_named(tmp_path):
    result = CliRunner().invoke(main, ["run", "grand_labels", "--profile", "smoke", "--data-dir",
                                       str(tmp_path / "nowhere"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert f"the data root {tmp_path / 'nowhere'} does not exist" in " ".join(result.output.split())


def test_experiment_rejecting_a_setting_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(main, ["run", "work_precision", "--profile", "smoke", "--out", str(tmp_path),
                                       "--set", "problems=kepler"])
    assert result.exit_code != 0 and "unknown problem(s) ['kepler']" in result.output


def test_list_and_methods():
    listed = invoke("list")
    assert listed.exit_code == 0 and "work_precision" in listed.output
    methods = invoke("methods")
    assert methods.exit_code == 0 and "dopri5" in methods.output and "tsit5" in methods.output


def test_report_puts_metrics_beside_thesis_numbers(tmp_path):
    from odekit.experiments import ThesisNumber
    from odekit.report.markdown import build_report

    accuracy = Key("accuracy_vs_labels", "grand-l", "cora", 1)

    def run(config, ctx):
        ctx.record(accuracy, 81.5)
        ctx.record(Key("nfe", "grand-l"), 40)
        ctx.record(Key("error", "prox_be", x=0.01), 2e-9)

    exp = register(Experiment(
        name="thesis_check", title="Thesis check", thesis_items="Table 0.0", config_class=ExperimentConfig,
        profiles={"smoke": {}, "quick": {}, "full": {}}, run=run,
        # 1.0 matches the recorded 1: keys are compared by value, not by spelling
        thesis={Key("accuracy_vs_labels", "grand-l", "cora", 1.0): ThesisNumber(83.0, "Table 0.0, Cora", std=1.0),
                Key("missing"): ThesisNumber(1.0, "Fig 0.0"),
                Key("error", "prox_be", x=0.01): ThesisNumber(4e-7, "Table 0.1", higher_is_better=False)},
        metrics={"accuracy_vs_labels": Metric("test accuracy (%)", "labels/class"),
                 "error": Metric("final error", "h")},
        model_labels={"grand-l": "GRAND-l"}, dataset_labels={"cora": "Cora"},
    ))
    try:
        run_dir = execute(exp, exp.config("smoke"), tmp_path, tmp_path)
        text = build_report(tmp_path, EXPERIMENTS.values()).read_text()
    finally:
        del EXPERIMENTS["thesis_check"]
    assert ("| GRAND-l | Cora | labels/class = 1 | test accuracy (%) | 81.5 | 83 ± 1 | Table 0.0, Cora | **differs**: "
            "off by -1.5 (1.5 std) |") in text
    assert "| GRAND-l |  |  | nfe | 40 | — | no thesis counterpart |  |" in text
    assert ("| prox_be |  | h = 0.01 | final error | 2e-09 | 4e-07 | Table 0.1 | **agrees**: better: 0.005× the "
            "thesis's |") in text
    assert ("|  |  |  | missing | not measured | 1 | Fig 0.0 | **not comparable**: this profile does not measure it; "
            "run the full profile |") in text
    assert "Not run yet: `odekit run work_precision`." in text
    # the run's records: one long-format row each, identifiers not labels
    rows = json.loads((run_dir / "results.json").read_text())
    assert rows[0] == {"experiment": "thesis_check", "model": "grand-l", "dataset": "cora", "x": 1,
                       "metric": "accuracy_vs_labels", "value": 81.5}
    assert read_results(run_dir)[accuracy] == 81.5
    with open(tmp_path / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    (row,) = [r for r in table if r["experiment"] == "thesis_check" and r["metric"] == "error"]
    assert (row["model"], row["x"], float(row["value"]), float(row["thesis"]), row["verdict"]) == (
        "prox_be", "0.01", 2e-9, 4e-7, "agrees")


def test_report_folds_a_large_unmeasured_grid_into_one_row():
    from odekit.experiments import ThesisNumber
    from odekit.report.markdown import MAX_UNMEASURED_ROWS, _comparison_rows

    thesis = {Key("accuracy", "gcn", "cora", i): ThesisNumber(50.0 + i, f"Table 4.{i % 2 + 1}, Cora", std=1.0)
              for i in range(MAX_UNMEASURED_ROWS + 5)}
    rows, verdicts, unmeasured = _comparison_rows({Key("accuracy", "gcn", "cora", 0): 50.5}, thesis, Labels())
    assert rows[0] == ["gcn", "cora", "0", "accuracy", "50.5", "50 ± 1", "Table 4.1, Cora", "**agrees**: within ±1 std"]
    assert rows[1:] == [[f"{MAX_UNMEASURED_ROWS + 4} more thesis numbers", "", "", "", "not measured", "—",
                         "Table 4.1, Table 4.2",
                         "**not comparable**: not in this profile; run the full profile (or --set datasets=…)"]]
    assert len(verdicts) == 1 and unmeasured == MAX_UNMEASURED_ROWS + 4


def test_a_complete_run_from_before_typed_records_counts_as_outdated(tmp_path):
    from odekit.report.markdown import latest_complete_run

    run = tmp_path / "exp" / "20260101T000000Z"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "complete"}))
    (run / "metrics.json").write_text(json.dumps({"GRAND-l, Cora (%)": 80.0}))  # numbers keyed by sentences
    assert latest_complete_run(tmp_path, "exp") is None  # reproduce runs it again instead of reporting nothing
    (run / "results.json").write_text("[]")
    assert latest_complete_run(tmp_path, "exp") == run


def test_reproduces_report_shows_the_run_it_reused_not_a_newer_one_of_other_settings(tmp_path, counting_experiment):
    command = ["reproduce", "--only", "counting", "--out", str(tmp_path)]
    assert CliRunner().invoke(main, command).exit_code == 0
    (reused,) = [p for p in (tmp_path / "counting").iterdir() if p.is_dir()]
    other = CliRunner().invoke(main, ["run", "counting", "--set", "items=2", "--out", str(tmp_path)])
    assert other.exit_code == 0  # a newer complete run, of other settings
    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0 and "0 ran, 1 already complete" in again.output
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| `counting`"))
    assert f"| {reused.name} |" in row
    # `odekit report` on its own shows the latest complete run
    assert CliRunner().invoke(main, ["report", "--runs", str(tmp_path)]).exit_code == 0
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| `counting`"))
    assert f"| {reused.name} |" not in row
