"""``grand_t_search``: each split's depth chosen by validation, the same trials for both models."""

from __future__ import annotations

import csv
import json

import pytest
from scipy import stats

from odekit.experiments import execute, get
from odekit.experiments.grand_t_search import select, trials


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_both_models_get_the_same_trials_and_seeds():
    config = get("grand_t_search").config("smoke", depths=(1.0, 4.0, 16.0), source_scales=(1.0, 0.5, 0.1))
    cells = trials(config)
    by_model = {m: sorted((c.t_end, c.seed) for c in cells if c.model == m) for m in config.models}
    assert by_model["grand-l"] == by_model["grand++-l"] and len(by_model["grand-l"]) == 9
    assert {c.source_scale for c in cells if c.model == "grand++-l"} == {1.0, 0.5, 0.1}
    assert {c.source_scale for c in cells if c.model == "grand-l"} == {None}


def test_selection_takes_the_best_validation_never_a_failure_and_the_smallest_t_on_ties():
    config = get("grand_t_search").config("smoke", depths=(1.0, 4.0, 16.0), source_scales=(1.0,),
                                          models=("grand-l", "grand++-l"))
    cells = [c for c in trials(config) if c.model == "grand-l"]
    scores = {1.0: (0.5, 0.40), 4.0: (0.7, 0.60), 16.0: (None, None)}  # T=16 "failed" (would not be chosen anyway)
    done = {c.key: {"val": scores[c.t_end][0], "test": scores[c.t_end][1]} for c in cells}
    chosen = select(done, cells, 1)
    (pick,) = chosen.values()
    assert pick.cell.t_end == 4.0 and pick.test == pytest.approx(60.0)
    # a failed trial with a (stale) higher validation score is still never selected; ties go to the smaller T
    done = {c.key: {"val": 0.9 if c.t_end == 16.0 else 0.7, "test": None if c.t_end == 16.0 else c.t_end / 100}
            for c in cells}
    (pick,) = select(done, cells, 1).values()
    assert pick.cell.t_end == 1.0


def test_a_model_without_a_depth_is_refused(tmp_path, data_root):
    exp = get("grand_t_search")
    with pytest.raises(ValueError, match="gcn"):
        execute(exp, exp.config("smoke", models=("grand-l", "grand++-l", "gcn")), tmp_path, data_root)


@pytest.mark.slow
def test_smoke_selects_by_validation_and_tests_the_selected_pairs(tmp_path, data_root, verdicts_of):
    exp = get("grand_t_search")
    run_dir = execute(exp, exp.config("smoke", splits=2), tmp_path, data_root)
    verdicts_of(exp, run_dir)
    cells = json.loads((run_dir / "checkpoint.json").read_text())["cells"].values()
    assert len(cells) == 2 * 2 * 2 * 2 and all(c["status"] == "ok" for c in cells)
    best = {}
    for c in cells:  # recomputed here from the records: the best validation of each model and split
        key = (c["model"], c["run"])
        if key not in best or c["val"] > best[key]["val"] or (
                c["val"] == best[key]["val"] and c["t_end"] < best[key]["t_end"]):
            best[key] = c
    selected = {r["model"]: r for r in _rows(run_dir / "tables" / "t_search_selected.csv")}
    for model, label in (("grand-l", "GRAND-l"), ("grand++-l", "GRAND++-l")):
        accuracies = [100 * best[model, r]["test"] for r in (0, 1)]
        mean = sum(accuracies) / 2
        assert (float(selected[label]["test acc (%), T chosen by validation"].split(" ± ")[0])
                == pytest.approx(mean, abs=0.006))
    expected = stats.ttest_rel([100 * best["grand++-l", r]["test"] for r in (0, 1)],
                               [100 * best["grand-l", r]["test"] for r in (0, 1)])
    (row,) = _rows(run_dir / "tables" / "t_search_tests.csv")
    assert float(row["paired t (eq. 4.19)"]) == pytest.approx(expected.statistic, abs=0.006, nan_ok=True)
    assert (run_dir / "figures" / "t_search.png").stat().st_size > 10_000
