"""Verdicts on thesis numbers and claims, and how the report shows them."""

import json
import math

import pytest
import torch

from odekit.experiments.claims import Matches, Ordering, Outcome, ThesisNumber, Verdict, gap_verdict, number_verdict
from odekit.report.records import Key


@pytest.mark.parametrize("value,ref,outcome", [
    (80.0, ThesisNumber(81.0, "t", std=1.5), Outcome.AGREES),
    (78.0, ThesisNumber(81.0, "t", std=1.5), Outcome.DIFFERS),
    (16127, ThesisNumber(16127, "t", rel_tol=0.02), Outcome.AGREES),
    (17002, ThesisNumber(16730, "t", rel_tol=0.02), Outcome.AGREES),  # 1.6 % off
    (16525, ThesisNumber(16649 * 1.1, "t", rel_tol=0.02), Outcome.DIFFERS),
    (3e-9, ThesisNumber(4.68e-7, "t", higher_is_better=False), Outcome.AGREES),  # a smaller error is better
    (1e-6, ThesisNumber(4.68e-7, "t", higher_is_better=False), Outcome.DIFFERS),
    (-0.33, ThesisNumber(2.1, "t"), Outcome.DIFFERS),  # a t statistic: the sign is the claim
    (0.5, ThesisNumber(2.1, "t"), Outcome.AGREES),
    ("NA (solver failed)", ThesisNumber(2.1, "t", std=1.0), Outcome.NOT_COMPARABLE),
    (float("nan"), ThesisNumber(2.1, "t", std=1.0), Outcome.NOT_COMPARABLE),
])
def test_number_verdicts_follow_the_documented_rules(value, ref, outcome):
    verdict = number_verdict(value, ref)
    assert verdict.outcome is outcome and verdict.reason


def test_ordering_agrees_differs_or_names_what_is_missing():
    claim = Ordering("Fig 0", "a and b below c", quantity="q", low=("a", "b"), high=("c",))
    labels = {"a": "A", "b": "B", "c": "C"}
    agrees = claim.judge({"a": {"q": 1.0}, "b": {"q": 2.0}, "c": {"q": 3.0}}, labels, "loss")
    assert agrees.outcome is Outcome.AGREES and "A 1; B 2; C 3" in agrees.reason
    differs = claim.judge({"a": {"q": 1.0}, "b": {"q": 4.0}, "c": {"q": 3.0}}, labels, "loss")
    assert differs.outcome is Outcome.DIFFERS
    missing = claim.judge({"a": {"q": 1.0}, "c": {"q": 3.0}}, labels, "loss")
    assert missing.outcome is Outcome.NOT_COMPARABLE and "B" in missing.reason
    never = claim.judge({"a": {"q": 1.0}, "b": {"q": 2.0}, "c": {"q": math.inf}}, labels, "iterations")
    assert never.outcome is Outcome.AGREES  # "never reached" orders above any count
    nan = claim.judge({"a": {"q": math.nan}, "b": {"q": 2.0}, "c": {"q": 3.0}}, labels, "loss")
    assert nan.outcome is Outcome.NOT_COMPARABLE
    margin = Ordering("Fig 0", "much lower", quantity="q", low=("a",), high=("c",), factor=2.0)
    assert margin.judge({"a": {"q": 2.0}, "c": {"q": 3.0}}, labels, "x").outcome is Outcome.DIFFERS


def test_matches_compares_each_of_a_group_with_the_best_reference():
    labels = {"p": "P", "q": "Q", "a": "A", "b": "B"}
    accuracy = Matches("Fig 0", "as accurate", quantity="acc", group=("p", "q"), reference=("a", "b"), tolerance=0.01)
    within = accuracy.judge({"p": {"acc": 0.905}, "q": {"acc": 0.92}, "a": {"acc": 0.91}, "b": {"acc": 0.80}},
                            labels, "accuracy")
    assert within.outcome is Outcome.AGREES and "A 0.91" in within.reason
    short = accuracy.judge({"p": {"acc": 0.89}, "q": {"acc": 0.92}, "a": {"acc": 0.91}, "b": {"acc": 0.8}}, labels, "a")
    assert short.outcome is Outcome.DIFFERS
    loss = Matches("Fig 0", "as low", quantity="l", group=("p",), reference=("a", "b"), tolerance=0.1,
                   higher_is_better=False)
    assert loss.judge({"p": {"l": 1.05}, "a": {"l": 1.0}, "b": {"l": 2.0}}, labels, "loss").outcome is Outcome.AGREES
    assert loss.judge({"p": {"l": 1.2}, "a": {"l": 1.0}, "b": {"l": 0.5}}, labels, "loss").outcome is Outcome.DIFFERS
    assert loss.judge({"p": {"l": 1.0}, "a": {"l": math.nan}, "b": {"l": 1.0}}, labels,
                      "loss").outcome is Outcome.NOT_COMPARABLE
    # a run that trained one side only (e.g. the proximal solvers alone) judges nothing
    alone = Matches("Fig 0", "x", quantity="l", group=("p",), reference=())
    assert alone.judge({"p": {"l": 1.0}}, labels, "loss").outcome is Outcome.NOT_COMPARABLE
    assert Ordering("Fig 0", "x", quantity="l", low=(), high=("a",)).judge(
        {"a": {"l": 1.0}}, labels, "loss").outcome is Outcome.NOT_COMPARABLE


def test_a_caveat_keeps_the_measurement_but_makes_it_not_comparable():
    verdict = Verdict(Outcome.DIFFERS, "A 1 vs B 2").qualified("the models are untrained")
    assert verdict.outcome is Outcome.NOT_COMPARABLE
    assert "untrained" in verdict.reason and "differs, A 1 vs B 2" in verdict.reason
    assert Verdict(Outcome.AGREES, "x").qualified(None).outcome is Outcome.AGREES


def test_gap_verdict():
    assert gap_verdict([("Cora", 80.0, 77.0)], "ours vs theirs", "none").outcome is Outcome.AGREES
    assert gap_verdict([("Cora", 80.0, 77.0), ("CiteSeer", 60.0, 61.0)], "x", "none").outcome is Outcome.DIFFERS
    assert gap_verdict([], "x", "no pairs").reason == "no pairs"
    assert gap_verdict([("Cora", 70.0, 71.0)], "x", "n", holds=lambda g: g <= 0).outcome is Outcome.AGREES


def _judging_experiment(judged: dict[str, Verdict]):
    from dataclasses import dataclass

    from odekit.experiments import Experiment, ExperimentConfig
    from odekit.experiments.claims import Claim

    @dataclass
    class Config(ExperimentConfig):
        pass

    def run(config, ctx):
        ctx.record(Key("parameters"), 100)
        ctx.judge(judged)

    return Experiment(name="judging", title="Judging", thesis_items="Fig 9.9", config_class=Config,
                      profiles={"smoke": {}, "quick": {}, "full": {}}, run=run,
                      thesis={Key("parameters"): ThesisNumber(101, "Table 9.9", rel_tol=0.02)},
                      claims={"judged": Claim("Fig 9.9", "the judged claim"),
                              "unjudged": Claim("Fig 9.9", "a claim this run leaves alone")})


def test_the_report_gives_every_claim_and_number_a_verdict(tmp_path):
    from odekit.experiments import execute
    from odekit.report.markdown import build_report

    exp = _judging_experiment({"judged": Verdict(Outcome.DIFFERS, "A 2 vs B 1 after 3 epochs")})
    run_dir = execute(exp, exp.config("smoke"), tmp_path, tmp_path)
    assert json.loads((run_dir / "verdicts.json").read_text()) == {
        "judged": {"outcome": "differs", "reason": "A 2 vs B 1 after 3 epochs"}}
    report = build_report(tmp_path, [exp]).read_text()
    assert "| Fig 9.9 | the judged claim | **differs**: A 2 vs B 1 after 3 epochs |" in report
    assert "| Fig 9.9 | a claim this run leaves alone | **not comparable**: this run recorded no verdict" in report
    assert "| parameters | 100 | 101 | Table 9.9 | **agrees**: within 2%" in report
    assert "| `judging` | Fig 9.9 | " in report and "1 agree, 1 differ, 1 not comparable |" in report


def test_judging_an_undeclared_claim_is_an_error(tmp_path):
    from odekit.experiments import execute

    exp = _judging_experiment({"misspelt": Verdict(Outcome.AGREES, "x")})
    with pytest.raises(Exception, match="declares no claim.*misspelt"):
        execute(exp, exp.config("smoke"), tmp_path, tmp_path)


def test_a_stopped_training_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    """Epoch-level resume: stopped after epoch 1 of 2, then rerun, it ends where an unstopped run ends."""
    from odekit.experiments import image_classification
    from odekit.experiments.image_classification import ImageConfig, train_model

    torch.manual_seed(0)
    data = ((torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))),
            (torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))))
    config = ImageConfig(models=("hbnode",), epochs=2, batch_size=4, lr=1e-3, tol=1e-2)
    whole = train_model("hbnode", config, data, tmp_path / "whole.pt")

    def stop_after_first_epoch(n: int = 1) -> None:
        if n:  # not the count of restored epochs (none yet)
            raise KeyboardInterrupt

    resume = tmp_path / "unfinished.pt"
    monkeypatch.setattr(image_classification, "cell_advance", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_model("hbnode", config, data, tmp_path / "w.pt", resume)
    assert resume.is_file()
    advanced = []
    monkeypatch.setattr(image_classification, "cell_advance", lambda n=1: advanced.append(n))
    resumed = train_model("hbnode", config, data, tmp_path / "w.pt", resume)
    assert sum(advanced) == 2  # the bar counts the restored epoch
    assert resume.exists()  # kept until the grid runner has saved the cell's record (tests/test_executors.py)
    keys = ("epoch", "nfe_forward", "nfe_backward", "train_loss", "test_accuracy")
    assert [{k: e[k] for k in keys} for e in resumed] == [{k: e[k] for k in keys} for e in whole]
    for name, tensor in torch.load(tmp_path / "whole.pt").items():
        torch.testing.assert_close(torch.load(tmp_path / "w.pt")[name], tensor, rtol=0, atol=0)
