"""``grand_labels``: accuracy against the number of labelled nodes per class (Table 4.3, Fig 4.1,
Tables 4.4–4.8).

GRAND++-l (the thesis's model: source at the run's training nodes, eq. 4.11's initial condition;
and the authors' GRAND++ code: source at their seed-12345 nodes, ``X(0) = x + C``),
GRAND-l and the PyG baselines, trained with k ∈ {1, 2, 5, 10, 20} labelled nodes per class on
each split. GRAND++ integrates to Table 4.12's T, GRAND to the authors' T. Beside the accuracies:
the unpaired (Welch, eq. 4.18) and paired (eq. 4.19) one-sided t-tests of GRAND++-l against GRAND-l
over the same splits, by scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..report.records import Key, Metric
from .base import RunContext, ThesisNumber
from .claims import Claim, Verdict, gap_verdict
from .grand_thesis import TABLE_4_3, TABLE_4_4, TABLE_4_5
from .node_classification import (
    SWEEP_METRICS,
    Cell,
    gain_test,
    gain_verdict,
    graph_experiment,
    group,
    label_cells,
    labels_text,
    mean_accuracies,
    model_gaps,
    paired_accuracies,
    report_sweep,
    run_cells,
    table_numbers,
)
from .node_settings import DATASET_LABELS, MODELS, NodeClassificationConfig, check_config


@dataclass
class GrandLabelsConfig(NodeClassificationConfig):
    models: tuple[str, ...] = ("grand++-l", "grand++-l-refsrc", "grand-l", "gcn", "gat", "sage", "monet")
    labels: tuple[int, ...] = (1, 2, 5, 10, 20)


def _t_tests(ctx: RunContext, config: GrandLabelsConfig, done: dict, cells: list[Cell]) -> dict:
    """Tables 4.4–4.5: is GRAND++-l more accurate than GRAND-l (one-sided, same splits and seeds)?

    Returns ``{(variant, dataset, k): GainTest}``."""
    rows, results = [], {}
    for challenger in ("grand++-l", "grand++-l-refsrc"):
        if challenger not in config.models or "grand-l" not in config.models:
            continue
        matched = paired_accuracies(done, cells, challenger, "grand-l", lambda c: c.per_class)
        for dataset in config.datasets:
            for k in config.labels:
                pairs = matched.get((dataset, k), [])
                test = gain_test(pairs)
                if test is None:
                    rows.append([DATASET_LABELS[dataset], MODELS[challenger].label, k, len(pairs), "", "", "", "", ""])
                    continue
                results[(challenger, dataset, k)] = test
                rows.append([DATASET_LABELS[dataset], MODELS[challenger].label, k, test.pairs, f"{test.gain:+.2f}",
                             f"{test.unpaired_t:.2f}", f"{test.unpaired_p:.3f}", f"{test.paired_t:.2f}",
                             f"{test.paired_p:.3f}"])
                if challenger == "grand++-l":
                    ctx.record(Key("unpaired_t", challenger, dataset, float(k)), round(test.unpaired_t, 2))
                    ctx.record(Key("paired_t", challenger, dataset, float(k)), round(test.paired_t, 2))
    ctx.table("table4_4_4_5_t_tests", ["dataset", "GRAND++ variant", "labels/class", "pairs", "mean gain (points)",
                                       "unpaired t (eq. 4.18)", "p (one-sided)", "paired t (eq. 4.19)",
                                       "p (one-sided)"], rows,
              "Tables 4.4–4.5: one-sided t-tests of GRAND++-l over GRAND-l on the same splits and seeds "
              "(thesis: n = 100; t > 1.66 is significant at 0.95).")
    return results


BASELINES = ("gcn", "gat", "sage", "monet")


def _verdicts(config: GrandLabelsConfig, means: dict, tests: dict) -> dict[str, Verdict]:
    """Table 4.3's and Tables 4.4–4.5's claims at the lowest labelling rate of the run."""
    k = min(config.labels)
    found = [(DATASET_LABELS[d], tests[("grand++-l", d, k)]) for d in config.datasets if ("grand++-l", d, k) in tests]
    gain = gain_verdict(found, f"GRAND++-l minus GRAND-l at {labels_text(k)}")
    pairs = [pair for baseline in BASELINES if baseline in config.models
             for pair in model_gaps(means, "grand++-l", baseline, lambda d, xs: [x for x in xs if x == k],
                                    x_name=f"{MODELS[baseline].label}, k=")]
    baselines = gap_verdict(pairs, f"GRAND++-l vs the GNN baseline, test accuracy (%) at {labels_text(k)}",
                            "the run lacks GRAND++-l or a GNN baseline to compare it with")
    return {"low_label_gain": gain, "beats_baselines": baselines}


def run(config: GrandLabelsConfig, ctx: RunContext) -> None:
    check_config(config)
    cells = label_cells(config, config.labels)
    done = run_cells(config, ctx, cells, "Table 4.3: accuracy vs labels per class")
    report_sweep(ctx, group(done, cells, lambda c: float(c.per_class)), TABLE_4_3, name="table4_3_labels",
                 x_name="labelled nodes per class", metric="accuracy_vs_labels",
                 caption="Table 4.3 / Tables 4.6–4.8: test accuracy (mean ± std over splits × seeds) against labelled "
                         "nodes per class, beside the thesis.",
                 figure_caption="Fig 4.1: test accuracy against labelled nodes per class (solid: odekit, "
                                "dashed: thesis).")
    tests = _t_tests(ctx, config, done, cells)
    ctx.judge(_verdicts(config, mean_accuracies(group(done, cells, lambda c: float(c.per_class))), tests))


def _thesis() -> dict[Key, ThesisNumber]:
    numbers = table_numbers(TABLE_4_3, "accuracy_vs_labels", lambda model, dataset: "Table 4.3")
    # t grows like √n: the thesis's come from 100 runs, so compare signs, not sizes
    for table, kind, source in ((TABLE_4_4, "unpaired_t", "Table 4.4 (n = 100)"),
                                (TABLE_4_5, "paired_t", "Table 4.5 (n = 100)")):
        for dataset, row in table.items():
            for k, value in row.items():
                numbers[Key(kind, "grand++-l", dataset, float(k))] = ThesisNumber(
                    value, f"{source}, {DATASET_LABELS[dataset]}")
    return numbers


# How the records are labelled in the report.
T_TEST_METRICS = {"unpaired_t": Metric("unpaired t over GRAND-l (eq. 4.18)", "labels/class"),
                  "paired_t": Metric("paired t over GRAND-l (eq. 4.19)", "labels/class")}


EXPERIMENT = graph_experiment(
    name="grand_labels",
    sweeps=("labels",),
    check=check_config,
    quick_seconds=205,
    title="GRAND++ with few labelled nodes",
    thesis_items="Table 4.3, Fig 4.1, Tables 4.4–4.8",
    config_class=GrandLabelsConfig,
    summary="The thesis reports GRAND++-l more accurate than GRAND-l and the GNN baselines at low labelling "
            "rates (e.g. Cora, 1 label/class: 54.9 vs 52.5), significantly so on most datasets by t-test.",
    profiles={
        "smoke": {"datasets": ("cora",), "models": ("grand++-l", "grand-l", "gcn"), "labels": (1,), "splits": 2,
                  "seeds": 1, "epochs": 2, "baseline_epochs": 5, "time_points": 3, "time_scan": "best_epoch"},
        # the lowest and the highest rate (5 labels as well took the quick profile from 200 s to 305 s)
        "quick": {"models": ("grand++-l", "grand++-l-refsrc", "grand-l", "gcn"), "labels": (1, 20),
                  "splits": 2, "seeds": 1, "epochs": 15, "baseline_epochs": 40,
                  "time_scan": "best_epoch"},
        "full": {"datasets": ("cora", "citeseer", "pubmed", "coauthor_cs", "computers", "photo")},
    },
    run=run,
    thesis=_thesis(),
    metrics={**SWEEP_METRICS, **T_TEST_METRICS},
    claims={
        "low_label_gain": Claim("Table 4.3, Tables 4.4–4.5", "At the lowest labelling rate GRAND++-l is more "
                                                             "accurate than GRAND-l (Cora, 1 label/class: 54.9 vs "
                                                             "52.5), significantly by a one-sided t-test."),
        "beats_baselines": Claim("Table 4.3, Fig 4.1", "At the lowest labelling rate GRAND++-l is more accurate "
                                                       "than the GNN baselines (GCN, GAT, GraphSAGE, MoNet)."),
    },
)
