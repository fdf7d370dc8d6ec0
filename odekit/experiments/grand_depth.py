"""``grand_depth``: accuracy against depth (Table 4.1, Fig 4.2; Table 4.2 on ogbn-arxiv).

GRAND-l and GRAND++-l integrated to T ∈ {1, 4, 16, 32, 64, 128, 256}, and the discrete baselines
with {1, 4, 16, 32} layers, at 20 labelled nodes per class. A run whose solver fails (the NFE cap,
a step-size underflow) is recorded as NA, as the thesis does. ``--set per_class=1`` gives the
setting of Fig 4.3; ``--set datasets=ogbn_arxiv --set hidden=81 --set depths=1,4,6,8,32,64,96``
the one of Table 4.2 (official split).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..report.records import Key, Metric
from .base import RunContext, ThesisNumber
from .claims import Claim, Outcome, Verdict, gap_verdict
from .grand_thesis import TABLE_4_1
from .node_classification import (
    SWEEP_METRICS,
    Cell,
    accuracy_lost,
    depth_cells,
    graph_experiment,
    group,
    mean_accuracies,
    report_sweep,
    run_cells,
    runs_of,
    summarise,
    table_numbers,
)
from .node_settings import DATASET_LABELS, MODELS, NodeClassificationConfig, check_config


@dataclass
class GrandDepthConfig(NodeClassificationConfig):
    models: tuple[str, ...] = ("grand++-l", "grand++-l-refsrc", "grand-l")
    depths: tuple[float, ...] = (1, 4, 16, 32, 64, 128, 256)
    baselines: tuple[str, ...] = ("gcn", "gat", "sage")
    layers: tuple[int, ...] = (1, 4, 16, 32)
    per_class: int = 20


def cells_of(config: GrandDepthConfig) -> tuple[list[Cell], list[Cell]]:
    runs = runs_of(config)
    continuous = depth_cells(config, config.depths, config.per_class)
    discrete = [Cell(d, b, config.per_class, run, seed, depth=n) for d in config.datasets for n in config.layers
                for run, seed in runs for b in config.baselines]
    return continuous, discrete


def _gap_metrics(ctx: RunContext, grouped: dict) -> None:
    """GRAND++-l minus GRAND-l at each depth, the quantity the chapter's claim is about."""
    for (dataset, model, t), results in grouped.items():
        if not model.startswith("grand++-l") or (dataset, "grand-l", t) not in grouped:
            continue
        ours, theirs = summarise(results)[0], summarise(grouped[(dataset, "grand-l", t)])[0]
        if ours is not None and theirs is not None:
            ctx.record(Key("gain_over_grand_l", model, dataset, t), round(ours - theirs, 2))


def _check(config: GrandDepthConfig) -> None:
    check_config(config, config.models + config.baselines)
    if any(t <= 0 for t in config.depths) or any(n < 1 for n in config.layers):
        raise ValueError("depths T must be positive and layer counts at least 1")


def run(config: GrandDepthConfig, ctx: RunContext) -> None:
    _check(config)
    continuous, discrete = cells_of(config)
    done = run_cells(config, ctx, continuous + discrete, "Table 4.1: accuracy vs depth")
    if continuous:
        grouped = group(done, continuous, lambda c: c.t_end)
        report_sweep(ctx, grouped, TABLE_4_1, name="table4_1_continuous_depth", x_name="depth T",
                     metric="accuracy_vs_depth",
                     caption="Table 4.1 (GRAND rows): test accuracy against the integration time T; NA = the solver "
                             "failed (NFE cap or step underflow).",
                     figure_caption="Fig 4.2: test accuracy against depth T (solid: odekit, dashed: thesis).")
        _gap_metrics(ctx, grouped)
    ctx.judge(_verdicts(mean_accuracies(group(done, continuous, lambda c: c.t_end)),
                        mean_accuracies(group(done, discrete, lambda c: float(c.depth)))))
    if discrete:
        report_sweep(ctx, group(done, discrete, lambda c: float(c.depth)), TABLE_4_1, name="table4_1_gnn_layers",
                     x_name="layers", metric="accuracy_vs_layers",
                     caption="Table 4.1 (GNN rows): test accuracy against the number of layers.",
                     figure_caption="Table 4.1 (GNN rows) as a figure: deeper GNNs over-smooth.")


# Table 4.1's "collapse": a baseline deeper than 4 layers loses at least this many points against 1 layer
# (the thesis: GCN on Cora 76.9 → 19.7 at 16 layers).
COLLAPSE_POINTS = 20.0


def _drop(means: dict, dataset: str, model: str) -> tuple[float, float, float, float] | None:
    """(shallowest x, its accuracy, deepest x, its accuracy) of ``model`` on ``dataset``, if two depths ran."""
    xs = sorted(x for d, m, x in means if d == dataset and m == model)
    if len(xs) < 2:
        return None
    return xs[0], means[(dataset, model, xs[0])], xs[-1], means[(dataset, model, xs[-1])]


def _verdicts(continuous: dict, discrete: dict) -> dict[str, Verdict]:
    """Table 4.1's two claims on the run's mean accuracies."""
    holds = gap_verdict(accuracy_lost(continuous, "grand++-l", "grand-l"),
                        "accuracy lost from the shallowest to the deepest T, GRAND-l vs GRAND++-l (points)",
                        "the run has GRAND-l and GRAND++-l at fewer than two common depths")
    collapses, shown = [], []
    for dataset, model in dict.fromkeys((d, m) for d, m, _ in discrete):
        drop = _drop(discrete, dataset, model)
        if drop and drop[2] > 4:
            collapses.append(drop[1] - drop[3] >= COLLAPSE_POINTS)
            shown.append(f"{DATASET_LABELS[dataset]} {MODELS[model].label} {drop[1]:.1f} ({drop[0]:g} layer) → "
                         f"{drop[3]:.1f} ({drop[2]:g} layers)")
    collapse = (Verdict(Outcome.AGREES if all(collapses) else Outcome.DIFFERS,
                        f"accuracy (%) falls by ≥ {COLLAPSE_POINTS:g} points: " + "; ".join(shown)) if collapses else
                Verdict(Outcome.NOT_COMPARABLE, "the run has no baseline both at 1 and at more than 4 layers"))
    return {"grandpp_holds_accuracy": holds, "gnns_collapse": collapse}


def _thesis() -> dict[Key, ThesisNumber]:
    continuous = {m: TABLE_4_1[m] for m in TABLE_4_1 if not MODELS[m].baseline}
    discrete = {m: TABLE_4_1[m] for m in TABLE_4_1 if MODELS[m].baseline}

    def source(model: str, dataset: str) -> str:
        return "Table 4.2" if dataset == "ogbn_arxiv" else "Table 4.1"

    numbers = {**table_numbers(continuous, "accuracy_vs_depth", source),
               **table_numbers(discrete, "accuracy_vs_layers", source)}
    for dataset in TABLE_4_1["grand-l"]:
        for t, ours in TABLE_4_1["grand++-l"][dataset].items():
            theirs = TABLE_4_1["grand-l"][dataset][t]
            if ours is not None and theirs is not None:
                for model in ("grand++-l", "grand++-l-refsrc"):
                    numbers[Key("gain_over_grand_l", model, dataset, float(t))] = ThesisNumber(
                        round(ours[0] - theirs[0], 2), f"Table 4.1, {DATASET_LABELS[dataset]}")
    return numbers


EXPERIMENT = graph_experiment(
    name="grand_depth",
    sweeps=("depths", "baselines", "layers", "per_class"),
    check=_check,
    quick_seconds=95,
    title="GRAND++ and over-smoothing at large depth",
    thesis_items="Table 4.1, Fig 4.2 (Table 4.2 on ogbn-arxiv)",
    config_class=GrandDepthConfig,
    summary="The thesis reports GRAND++-l holding its accuracy as T grows while GRAND-l loses it (Cora, T = 128: "
            "80.3 vs 77.2; T = 256: 79.0 vs 67.8), and GCN/GAT/GraphSAGE collapsing beyond 4 layers.",
    profiles={
        "smoke": {"datasets": ("cora",), "depths": (1, 4), "layers": (1, 2), "baselines": ("gcn",), "splits": 1,
                  "seeds": 1, "epochs": 2, "baseline_epochs": 5, "time_points": 3, "time_scan": "best_epoch"},
        "quick": {"datasets": ("cora",), "depths": (4, 128), "baselines": ("gcn",), "layers": (1, 16),
                  "splits": 1, "seeds": 1, "epochs": 15, "baseline_epochs": 40,
                  "time_scan": "best_epoch"},
        "full": {"datasets": ("cora", "citeseer", "pubmed", "coauthor_cs", "computers", "photo")},
    },
    run=run,
    thesis=_thesis(),
    metrics={**SWEEP_METRICS, "gain_over_grand_l": Metric("minus GRAND-l, test accuracy (points)", "T")},
    claims={
        "grandpp_holds_accuracy": Claim("Table 4.1, Fig 4.2", "GRAND++-l holds its accuracy as T grows while GRAND-l "
                                                              "loses it (Cora, T = 128: 80.3 vs 77.2)."),
        "gnns_collapse": Claim("Table 4.1", "GCN, GAT and GraphSAGE collapse beyond 4 layers (over-smoothing)."),
    },
)
