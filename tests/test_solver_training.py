"""The solver-comparison loop of chapter 5's training experiments, and those experiments end to end."""

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from odekit.experiments import RunContext, execute, get
from odekit.experiments.base import Experiment, ExperimentConfig
from odekit.experiments.solver_training import OnDevice, SolverChoice, train_with_solvers
from odekit.models.block import ODEBlock

CHOICES = [SolverChoice("dopri5", "DOPRI5", {"method": "dopri5", "rtol": 1e-4, "atol": 1e-4, "gradient": "adjoint"}),
           SolverChoice("prox_bdf2", "prox BDF2", {"method": "prox_bdf2", "options": {"step_size": 0.05}},
                        proximal=True)]


class Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    def forward(self, t, y):
        return self.net(y) - y


def _train(ctx, stop_at=None):
    target = torch.tensor([[1.0, -1.0]])

    def build(choice):
        block = ODEBlock(Field(), 1.0, settings=choice.solve_settings())
        return block, torch.optim.Adam(block.parameters(), lr=1e-2)

    def loss_of(block, generator):
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        calls.append(1)
        y0 = torch.randn(4, 2, generator=generator)
        return (block(y0) - target).square().mean()

    calls = []
    return train_with_solvers(ctx, CHOICES, 6, build=build, loss_of=loss_of,
                              nfe_of=lambda b: (b.stats.nfe, b.stats.nfe_backward),
                              evaluate=lambda b: float(b(torch.ones(1, 2)).sum()), evaluate_every=2, warmup=3)


@dataclass
class Config(ExperimentConfig):
    pass


def _context(path):
    exp = Experiment(name="solvers", title="t", thesis_items="-", config_class=Config,
                     profiles={"smoke": {}, "quick": {}, "full": {}}, run=lambda config, ctx: None)
    path.mkdir(parents=True, exist_ok=True)
    return RunContext(exp, Config(), path, path)


def test_every_solver_trains_the_same_start_and_a_stopped_run_resumes_to_the_same_records(tmp_path):
    whole = _train(_context(tmp_path / "whole"))
    first, second = (whole[c.key].records for c in CHOICES)
    assert len(first) == len(second) == 6
    assert first[0].loss == pytest.approx(second[0].loss, rel=2e-3)  # same weights and batch, two solvers
    assert [r.metric is not None for r in first] == [False, True, False, True, False, True]
    assert all(r.nfe_forward > 0 and r.nfe_backward > 0 and r.seconds > 0 for r in first + second)
    if Path("/proc/self/clear_refs").exists():
        assert all(r.peak_mb is not None and r.peak_mb >= 0 for r in first + second)
    summary = whole["prox_bdf2"].summary()
    assert summary["nfe_forward"] == pytest.approx(sum(r.nfe_forward for r in second) / 6)
    # Stopped in the second solver's fifth iteration (its last save was after iteration 4), then rerun.
    ctx = _context(tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):
        _train(ctx, stop_at=6 + 4)
    assert (ctx.out / "unfinished_prox_bdf2.pt").is_file()
    resumed = _train(_context(tmp_path / "stopped"))
    for choice in CHOICES:
        keep = ("iteration", "loss", "nfe_forward", "nfe_backward", "metric")
        assert [{k: getattr(r, k) for k in keep} for r in resumed[choice.key].records] == \
               [{k: getattr(r, k) for k in keep} for r in whole[choice.key].records]
    assert not (ctx.out / "unfinished_prox_bdf2.pt").exists()


def test_inner_solve_warnings_are_recorded_in_the_status(tmp_path):
    unconverged = [SolverChoice("prox_cn", "prox CN", {"method": "prox_cn", "options": {
        "step_size": 0.5, "inner": "gd", "inner_max_iters": 2, "inner_res_tol": 1e-12, "inner_tol": 1e-12}},
        proximal=True)]

    def build(choice):
        block = ODEBlock(Field(), 1.0, settings=choice.solve_settings())
        return block, torch.optim.SGD(block.parameters(), lr=1e-3)

    runs = train_with_solvers(_context(tmp_path), unconverged, 2, build=build,
                              loss_of=lambda b, g: b(torch.randn(4, 2, generator=g)).square().mean(),
                              nfe_of=lambda b: (b.stats.nfe, b.stats.nfe_backward), evaluate=lambda b: 0.0,
                              evaluate_every=1)
    run = runs["prox_cn"]
    assert [r.warnings > 0 for r in run.records] == [True, True]
    assert run.status == "ok" and "engine warnings in 2 of 2 iterations" in run.described_status()
    assert "iteration 1: " in run.described_status() and "did not converge" in run.described_status()
    # the first warning travels with the records: a run restored from them (a resume) still names it
    restored = type(run).from_dict(json.loads(json.dumps(run.as_dict())))
    assert restored.described_status() == run.described_status()


@pytest.mark.slow
def test_grand_proximal_smoke_on_cora(tmp_path, verdicts_of, data_root):
    exp = get("grand_proximal")
    run_dir = execute(exp, exp.config("smoke"), tmp_path / "runs", data_root)
    verdicts = verdicts_of(exp, run_dir)
    assert set(verdicts) == {"fewer_nfe", "less_time", "same_loss", "same_accuracy"}
    header, *rows = (run_dir / "tables" / "fig5_7_solvers.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["DOPRI5", "prox CN", "prox CN (implicit gradient)"]
    for row in rows:
        fields = dict(zip(header.split(","), row.split(",")))
        assert fields["iterations"] == "2" and float(fields["forward NFE / iteration"]) > 0
        assert 0 <= float(fields["validation accuracy"]) <= 1
    # the proximal grid is fixed: 2 steps of 0.5 to T = 1, and the adjoint's backward NFE are its own
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())["solvers"]
    assert all(r["nfe_backward"] > 0 for r in checkpoint["dopri5"]["records"])
    assert (run_dir / "figures" / "fig5_7_grand_solvers.png").stat().st_size > 10_000


@pytest.mark.slow
def test_cnf_mnist_smoke_on_a_mnist_fixture(tmp_path, verdicts_of):
    from test_experiments import _write_mnist

    _write_mnist(tmp_path / "data")
    exp = get("cnf_mnist")
    run_dir = execute(exp, exp.config("smoke"), tmp_path / "runs", tmp_path / "data")
    verdicts = verdicts_of(exp, run_dir)
    assert set(verdicts) == {"half_nfe", "less_time", "same_bits_per_dim"}
    header, *rows = (run_dir / "tables" / "fig5_6_solvers.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["DOPRI5", "prox BDF2"]
    for row in rows:
        fields = dict(zip(header.split(","), row.split(",")))
        assert float(fields["test bits/dim"]) > 0 and fields["status"] == "ok"
    # BDF2 on a fixed grid of step 0.2 to T = 1: 5 steps, each at least one evaluation per inner iteration
    records = json.loads((run_dir / "checkpoint.json").read_text())["solvers"]["prox_bdf2"]["records"]
    assert all(r["nfe_forward"] >= 5 for r in records)
    samples = torch.load(run_dir / "samples_prox_bdf2.pt")
    assert samples.shape == (4, 1, 7, 7) and ((samples >= 0) & (samples <= 1)).all()
    for figure in ("fig5_6_cnf_solvers", "cnf_samples"):
        assert (run_dir / "figures" / f"{figure}.png").stat().st_size > 5_000


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the CPU peak needs Linux's /proc")
def test_peak_memory_of_a_block_is_what_it_allocated_on_top():
    from odekit.experiments.memory import PeakMemory

    peak = PeakMemory(torch.device("cpu"))
    with peak.measure():
        held = torch.ones(25 * 2**20 // 4 * 4)  # 100 MiB of float32, touched
        del held
    assert 95 <= peak.megabytes <= 130
    with peak.measure():  # the freed 100 MiB went back to the system: a small block measures small
        small = torch.ones(2**18)
        del small
    assert peak.megabytes < 20


def test_cell_data_travel_on_the_cpu_and_meet_their_device_where_the_cell_runs(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a process without a GPU, on any machine
    placed = OnDevice("cuda:0", x=torch.arange(3.0))  # resolved only where the cell runs, not here
    with pytest.raises(ValueError, match="torch sees none"):
        placed["x"]
    assert OnDevice("auto", x=torch.arange(3.0))["x"].device.type == "cpu"
    with pytest.raises(RuntimeError):
        OnDevice("gpu", x=torch.arange(3.0))  # a misspelt device fails in the driver, before any cell

    local = OnDevice("cpu", x=torch.arange(3.0))
    assert torch.equal(local["x"], torch.arange(3.0))
    copy = pickle.loads(pickle.dumps(local))  # what a Ray worker receives
    assert copy._placed is None and torch.equal(copy["x"], torch.arange(3.0))
