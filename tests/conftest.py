import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from odekit.experiments import EXPERIMENTS, Experiment, ExperimentConfig, register
from odekit.report.records import Key


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def data_root() -> Path:
    """The offline data root (ODEKIT_DATA, as CI sets it); tests needing real data skip without it."""
    root = os.environ.get("ODEKIT_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("ODEKIT_DATA is not set to a data folder")
    return Path(root)


def _verdicts_of(experiment: Experiment, run_dir: Path) -> dict[str, dict]:
    """The run's verdicts, after checking that every claim the experiment declares got one."""
    import json

    from odekit.experiments.claims import Outcome

    verdicts = json.loads((run_dir / "verdicts.json").read_text()) if experiment.claims else {}
    assert set(verdicts) == set(experiment.claims), experiment.name
    for key, verdict in verdicts.items():
        assert Outcome(verdict["outcome"]) and len(verdict["reason"]) > 10, (experiment.name, key, verdict)
    return verdicts


@pytest.fixture
def verdicts_of():
    """``verdicts_of(experiment, run_dir)``: every declared claim judged, with a reason."""
    return _verdicts_of


@dataclass
class CountingConfig(ExperimentConfig):
    items: int = 5
    fail_at: int = -1
    interrupt_at: int = -1  # Ctrl-C there on the first attempt


def _counting_run(config, ctx):
    done = ctx.checkpoint.setdefault("done", [])
    for i in range(config.items):
        if i in done:
            continue
        if i == config.fail_at and not ctx.resumed:
            raise RuntimeError("simulated crash")
        if i == config.interrupt_at and not ctx.resumed:
            raise KeyboardInterrupt
        done.append(i)
        ctx.save_checkpoint()
    ctx.record(Key("items"), len(done))
    ctx.record(Key("threads"), torch.get_num_threads())


@pytest.fixture
def counting_experiment():
    """A registered experiment that checkpoints after each item and crashes at ``fail_at`` unless resumed."""
    exp = register(Experiment(name="counting", title="Counting", thesis_items="none", config_class=CountingConfig,
                              profiles={"smoke": {}, "quick": {}, "full": {}}, run=_counting_run))
    yield exp
    del EXPERIMENTS["counting"]
