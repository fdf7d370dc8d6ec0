"""``grand_variants``: GRAND-nl and GRAND-nl-rw with and without the source term (Tables 4.9, 4.10).

The attention is recomputed from ``X(t)`` at every evaluation (``-nl``); ``-rw`` rewires the graph
first (GDC: personalised PageRank, top-64 per node; or two-hop edges, Tables 4.6–4.8). Two sweeps:
depth T at 20 labelled nodes per class (Table 4.9) and labelled nodes per class at the dataset's
T (Table 4.10).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..report.records import Key, Metric
from .base import RunContext, ThesisNumber
from .claims import Claim, Verdict, gap_verdict
from .grand_thesis import TABLE_4_9, TABLE_4_10
from .node_classification import (
    SWEEP_METRICS,
    depth_cells,
    graph_experiment,
    group,
    label_cells,
    mean_accuracies,
    model_gaps,
    report_sweep,
    run_cells,
    table_numbers,
)
from .node_settings import MODELS, NodeClassificationConfig, check_config


@dataclass
class GrandVariantsConfig(NodeClassificationConfig):
    models: tuple[str, ...] = ("grand-nl", "grand-nl-rw-gdc", "grand++-nl", "grand++-nl-rw-gdc",
                               "grand-nl-rw-two_hop", "grand++-nl-rw-two_hop")
    depths: tuple[float, ...] = (1, 4, 16, 32, 64, 128)  # Table 4.9, at 20 labels per class
    labels: tuple[int, ...] = (1, 2, 5, 10, 20)  # Table 4.10, at the dataset's T
    datasets: tuple[str, ...] = ("cora", "citeseer", "pubmed")


def run(config: GrandVariantsConfig, ctx: RunContext) -> None:
    check_config(config)
    by_depth, by_labels = depth_cells(config, config.depths, 20), label_cells(config, config.labels)
    done = run_cells(config, ctx, by_depth + by_labels, "Tables 4.9–4.10: GRAND-nl variants")
    if by_depth:
        report_sweep(ctx, group(done, by_depth, lambda c: c.t_end), TABLE_4_9, name="table4_9_depth",
                     x_name="depth T", metric="accuracy_vs_depth",
                     caption="Table 4.9: GRAND-nl variants against depth T at 20 labelled nodes per class.",
                     figure_caption="Table 4.9 as a figure (solid: odekit, dashed: thesis).")
    ctx.judge(_verdicts(config, mean_accuracies(group(done, by_depth, lambda c: c.t_end)),
                        mean_accuracies(group(done, by_labels, lambda c: float(c.per_class)))))
    if by_labels:
        report_sweep(ctx, group(done, by_labels, lambda c: float(c.per_class)), TABLE_4_10, name="table4_10_labels",
                     x_name="labelled nodes per class", metric="accuracy_vs_labels",
                     caption="Table 4.10 (two-hop rows: Tables 4.6–4.8): GRAND-nl variants against labelled nodes "
                             "per class.",
                     figure_caption="Table 4.10 as a figure (solid: odekit, dashed: thesis).")


# Table 4.9's "deep": the claim is about the largest depths of each dataset (the thesis: 16–128).
DEEP_T = 16
PAIRS = (("grand++-nl", "grand-nl"), ("grand++-nl-rw-gdc", "grand-nl-rw-gdc"),
         ("grand++-nl-rw-two_hop", "grand-nl-rw-two_hop"))


def _verdicts(config: GrandVariantsConfig, by_depth: dict, by_labels: dict) -> dict[str, Verdict]:
    deepest = [pair for ours, theirs in PAIRS
               for pair in model_gaps(by_depth, ours, theirs, lambda d, xs: [x for x in xs[-1:] if x >= DEEP_T],
                                      x_name=f"{MODELS[ours].label} vs {MODELS[theirs].label}, T=")]
    lowest = [pair for ours, theirs in PAIRS
              for pair in model_gaps(by_labels, ours, theirs, lambda d, xs: xs[:1],
                                     x_name=f"{MODELS[ours].label} vs {MODELS[theirs].label}, k=")]
    return {
        "source_helps_deep": gap_verdict(deepest, "test accuracy (%) with vs without the source at the deepest T",
                                         f"the run has no depth T ≥ {DEEP_T} with both models "
                                         f"(its depths: {', '.join(f'{t:g}' for t in config.depths) or 'none'})"),
        "no_gain_low_labels": gap_verdict(lowest, "test accuracy (%) with vs without the source at the lowest "
                                                  "labelling rate", "the run has no labelling-rate sweep",
                                          holds=lambda gap: gap <= 0),
    }


def _thesis() -> dict[Key, ThesisNumber]:
    def source(table: str):
        return lambda model, dataset: "Tables 4.6–4.8" if model.endswith("two_hop") else table

    return {**table_numbers(TABLE_4_9, "accuracy_vs_depth", source("Table 4.9")),
            **table_numbers(TABLE_4_10, "accuracy_vs_labels", source("Table 4.10"))}


EXPERIMENT = graph_experiment(
    name="grand_variants",
    sweeps=("depths", "labels"),
    check=check_config,
    quick_seconds=55,
    title="Source term for GRAND-nl and GRAND-nl-rw",
    thesis_items="Tables 4.9, 4.10",
    config_class=GrandVariantsConfig,
    summary="The thesis reports GRAND++-nl(-rw) ahead of GRAND-nl(-rw) at large T (CiteSeer T = 128: 74.2 vs "
            "65.2) but not at low labelling rates.",
    profiles={
        "smoke": {"datasets": ("cora",), "models": ("grand-nl", "grand++-nl-rw-two_hop"), "depths": (1,),
                  "labels": (1,), "splits": 1, "seeds": 1, "epochs": 2, "time_points": 3,
                  "time_scan": "best_epoch"},
        "quick": {"datasets": ("cora",), "models": ("grand-nl", "grand++-nl"), "depths": (4,), "labels": (),
                  "splits": 1, "seeds": 1, "epochs": 15, "time_scan": "best_epoch"},
        "full": {},
    },
    run=run,
    thesis=_thesis(),
    metrics={**SWEEP_METRICS, "accuracy_vs_depth": Metric("test accuracy (%), 20 labels/class", "T")},
    claims={
        "source_helps_deep": Claim("Table 4.9", "With the source term, GRAND++-nl (-rw) outperforms GRAND-nl (-rw) "
                                                "when the network is deep (CiteSeer, T = 128: 74.2 vs 65.2)."),
        "no_gain_low_labels": Claim("Table 4.10", "At low labelling rates the source term no longer helps GRAND-nl "
                                                  "(-rw)."),
    },
)
