"""``grand_t_search``: does a depth chosen per labelling rate explain GRAND++'s low-label gain?

Table 4.3 compares GRAND++-l at the depths of Table 4.12 (tuned "around the optimal T for GRAND")
with GRAND-l at the authors' T. Here both models choose their depth on every split by validation
accuracy, from the same number of trained models: each of the ``depths`` (default
T ∈ {1, 4, 16, 32}) is trained ``len(source_scales)`` times. For GRAND++-l trial ``j`` uses the
source scale ``source_scales[j]`` (the source term of eq. 4.12, ``C = s·(x_i − x̄)`` at the labelled
nodes); GRAND-l, which has no source, gets as many initialisations instead. Trial ``j`` of both
models starts from the same seed. The selected model's test accuracy is compared between the
models on the same splits by one-sided t-tests (eqs. 4.18 and 4.19).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..report.plots import pyplot
from ..report.records import Key, Metric
from .base import RunContext, ThesisNumber
from .claims import Claim
from .grand_thesis import TABLE_4_3
from .node_classification import (
    Cell,
    format_accuracy,
    gain_test,
    gain_verdict,
    graph_experiment,
    labels_text,
    run_cells,
    runs_of,
    summarise,
    table_numbers,
    thesis_cell,
)
from .node_settings import DATASET_LABELS, MODELS, NodeClassificationConfig, check_config


@dataclass
class GrandTSearchConfig(NodeClassificationConfig):
    models: tuple[str, ...] = ("grand-l", "grand++-l")
    labels: tuple[int, ...] = (1, 5, 20)
    depths: tuple[float, ...] = (1.0, 4.0, 16.0, 32.0)
    # GRAND++'s trials at each depth; a model without a source trains as many initialisations
    source_scales: tuple[float, ...] = (1.0, 0.25)
    challenger: str = "grand++-l"  # compared with the other model of ``models``


def _check(config: GrandTSearchConfig) -> str:
    """Check the search's settings; returns the model the challenger is compared with."""
    check_config(config)
    baselines = [m for m in config.models if MODELS[m].baseline]
    if baselines:
        raise ValueError(f"grand_t_search searches the depth T of the GRAND family; {baselines} have none")
    others = [m for m in config.models if m != config.challenger]
    if config.challenger not in config.models or len(others) != 1:
        raise ValueError(f"models must be the challenger {config.challenger!r} and one model to compare it with, "
                         f"got {list(config.models)}")
    if not config.depths or any(t <= 0 for t in config.depths):
        raise ValueError(f"depths must be positive integration times, got {list(config.depths)}")
    if not config.source_scales or any(s < 0 for s in config.source_scales):
        raise ValueError(f"source_scales must be one or more non-negative scales, got {list(config.source_scales)}")
    return others[0]


def trials(config: GrandTSearchConfig) -> list[Cell]:
    """Every trained model of the search: per dataset, labelling rate, split, model, depth and trial."""
    n = len(config.source_scales)
    return [Cell(d, m, k, run, seed * n + j, t_end=float(t),
                 source_scale=scale if MODELS[m].source else None)
            for d in config.datasets for k in config.labels for run, seed in runs_of(config)
            for m in config.models for t in config.depths for j, scale in enumerate(config.source_scales)]


@dataclass(frozen=True)
class Selected:
    """The trial a split's validation accuracy selects."""

    cell: Cell
    val: float
    test: float  # %


def select(done: dict, cells: list[Cell], trials_per_depth: int) -> dict[tuple[str, str, int, int, int], Selected]:
    """The best-validation trial of each (dataset, model, labels, split, seed); ties go to the first
    trial (the smallest T). Failed trials are never selected."""
    searches: dict[tuple, list[Cell]] = {}
    for cell in cells:
        key = (cell.dataset, cell.model, cell.per_class, cell.run, cell.seed // trials_per_depth)
        searches.setdefault(key, []).append(cell)
    chosen = {}
    for key, group in searches.items():
        best = None
        for cell in group:
            record = done[cell.key]
            if record["test"] is not None and (best is None or record["val"] > best.val):
                best = Selected(cell, record["val"], 100 * record["test"])
        if best is not None:
            chosen[key] = best
    return chosen


def _trial_label(config: GrandTSearchConfig, model: str, cell: Cell) -> str:
    if MODELS[model].source:
        return f"s={cell.source_scale:g}"
    return f"init {cell.seed % len(config.source_scales)}"


METRICS = {
    "accuracy_t_by_validation": Metric("test accuracy (%), T chosen by validation", "labels/class"),
    "unpaired_t": Metric("unpaired t over the other model (eq. 4.18), both T chosen by validation", "labels/class"),
    "paired_t": Metric("paired t over the other model (eq. 4.19), both T chosen by validation", "labels/class"),
}


def _report_selected(ctx: RunContext, config: GrandTSearchConfig, chosen: dict) -> None:
    rows = []
    for dataset in config.datasets:
        for k in config.labels:
            for model in config.models:
                picks = [s for (d, m, kk, *_), s in chosen.items() if (d, m, kk) == (dataset, model, k)]
                records = [{"test": s.test / 100} for s in picks]
                failed = config.splits * config.seeds - len(picks)
                mean, std, n, _ = summarise(records)
                ref = thesis_cell(TABLE_4_3, model, dataset, k)
                depths = Counter(s.cell.t_end for s in picks)
                scales = Counter(_trial_label(config, model, s.cell) for s in picks)
                rows.append([DATASET_LABELS[dataset], MODELS[model].label, k, n,
                             format_accuracy(mean, std, failed),
                             "—" if ref in ("absent", None) else f"{ref[0]:.2f} ± {ref[1]:.2f}",
                             ", ".join(f"T={t:g}: {c}" for t, c in sorted(depths.items())),
                             ", ".join(f"{s}: {c}" for s, c in sorted(scales.items()))])
                if mean is not None:
                    ctx.record(Key("accuracy_t_by_validation", model, dataset, float(k)), round(mean, 2))
    header = ["dataset", "model", "labels/class", "splits", "test acc (%), T chosen by validation",
              "thesis (Table 4.3, fixed T)", "T chosen", "trial chosen"]
    ctx.table("t_search_selected", header, rows,
              "Each split's test accuracy of the trial with the best validation accuracy; the thesis's Table 4.3 "
              "numbers use Table 4.12's fixed T.")


def _report_tests(ctx: RunContext, config: GrandTSearchConfig, base: str, chosen: dict) -> dict:
    rows, tests = [], {}
    challenger = config.challenger
    for dataset in config.datasets:
        for k in config.labels:
            pairs = [(s.test, chosen[(dataset, base, k, *run)].test) for (d, m, kk, *run), s in chosen.items()
                     if (d, m, kk) == (dataset, challenger, k) and (dataset, base, k, *run) in chosen]
            test = gain_test(pairs)
            if test is None:
                rows.append([DATASET_LABELS[dataset], k, len(pairs), "", "", "", "", ""])
                continue
            tests[(dataset, k)] = test
            rows.append([DATASET_LABELS[dataset], k, test.pairs, f"{test.gain:+.2f}", f"{test.unpaired_t:.2f}",
                         f"{test.unpaired_p:.3g}", f"{test.paired_t:.2f}", f"{test.paired_p:.3g}"])
            ctx.record(Key("unpaired_t", challenger, dataset, float(k)), round(test.unpaired_t, 2))
            ctx.record(Key("paired_t", challenger, dataset, float(k)), round(test.paired_t, 2))
    ctx.table("t_search_tests", ["dataset", "labels/class", "pairs", "mean gain (points)", "unpaired t (eq. 4.18)",
                                 "p (one-sided)", "paired t (eq. 4.19)", "p (one-sided)"], rows,
              f"One-sided t-tests of {MODELS[challenger].label} over {MODELS[base].label}, each with T chosen by "
              f"validation on the same splits.")
    return tests


def _trial_means(config: GrandTSearchConfig, done: dict, cells: list[Cell]) -> dict[tuple, tuple]:
    """``{(dataset, model, k, T, trial label): (mean test %, std, mean validation %, runs)}``."""
    grouped: dict[tuple, list[dict]] = {}
    for cell in cells:
        key = (cell.dataset, cell.model, cell.per_class, cell.t_end, _trial_label(config, cell.model, cell))
        grouped.setdefault(key, []).append(done[cell.key])
    means = {}
    for key, records in grouped.items():
        mean, std, n, _ = summarise(records)
        vals = [100 * r["val"] for r in records if r["val"] is not None]
        means[key] = (mean, std, sum(vals) / len(vals) if vals else None, n)
    return means


def _report_trials(ctx: RunContext, config: GrandTSearchConfig, means: dict, chosen: dict) -> None:
    rows = [[DATASET_LABELS[d], MODELS[m].label, k, f"{t:g}", trial, n, format_accuracy(mean, std),
             "NA" if val is None else f"{val:.2f}"]
            for (d, m, k, t, trial), (mean, std, val, n) in means.items()]
    ctx.table("t_search_trials", ["dataset", "model", "labels/class", "T", "trial", "runs", "test acc (%)",
                                  "validation acc (%)"], rows,
              "Every trial of the search, averaged over splits (not selected).")
    plt = pyplot()
    fig, axes = plt.subplots(len(config.datasets), len(config.labels), squeeze=False,
                             figsize=(4 * len(config.labels), 3.4 * len(config.datasets)))
    for row, dataset in enumerate(config.datasets):
        for col, k in enumerate(config.labels):
            ax = axes[row][col]
            for i, model in enumerate(config.models):
                colour = f"C{i}"
                trial_names = dict.fromkeys(key[4] for key in means if key[:3] == (dataset, model, k))
                for style, trial in zip(("-", ":", "-.", "--"), trial_names):
                    points = sorted((key[3], v[0]) for key, v in means.items()
                                    if key[:3] == (dataset, model, k) and key[4] == trial and v[0] is not None)
                    if points:
                        ax.plot(*zip(*points), color=colour, linestyle=style, marker="o",
                                label=f"{MODELS[model].label}, {trial}")
                picks = [s.test for (d, m, kk, *_), s in chosen.items() if (d, m, kk) == (dataset, model, k)]
                if picks:
                    ax.axhline(sum(picks) / len(picks), color=colour, linewidth=2, alpha=0.5,
                               label=f"{MODELS[model].label}, T by validation")
                ref = thesis_cell(TABLE_4_3, model, dataset, k)
                if ref not in ("absent", None):
                    ax.axhline(ref[0], color=colour, linestyle="--", linewidth=1, alpha=0.6,
                               label=f"{MODELS[model].label}, thesis (Table 4.3)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(config.depths), [f"{t:g}" for t in config.depths])
            ax.minorticks_off()
            ax.set_title(f"{DATASET_LABELS[dataset]}, {labels_text(k)}")
            ax.set_xlabel("depth T")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    ctx.figure("t_search", fig, "Mean test accuracy of every trial against T (one line per trial); thick: the mean "
                                "of the validation-selected trials; dashed: the thesis's Table 4.3 at fixed T.")


def run(config: GrandTSearchConfig, ctx: RunContext) -> None:
    base = _check(config)
    cells = trials(config)
    done = run_cells(config, ctx, cells, "T chosen by validation: every trial")
    chosen = select(done, cells, len(config.source_scales))
    _report_selected(ctx, config, chosen)
    tests = _report_tests(ctx, config, base, chosen)
    _report_trials(ctx, config, _trial_means(config, done, cells), chosen)
    k = min(config.labels)
    found = [(DATASET_LABELS[d], tests[(d, k)]) for d in config.datasets if (d, k) in tests]
    ctx.judge({"tuned_depth_gain": gain_verdict(
        found, f"{MODELS[config.challenger].label} minus {MODELS[base].label} at {labels_text(k)}, both with T "
               f"chosen by validation")})


def _thesis() -> dict[Key, ThesisNumber]:
    table = {model: TABLE_4_3[model] for model in ("grand-l", "grand++-l")}
    return table_numbers(table, "accuracy_t_by_validation", lambda model, dataset: "Table 4.3 (Table 4.12's T)",
                         authors_code=False)  # the search trains GRAND-l and the thesis's GRAND++-l


EXPERIMENT = graph_experiment(
    name="grand_t_search",
    sweeps=("labels", "depths", "source_scales", "challenger"),
    check=_check,
    quick_seconds=90,
    title="GRAND++ against GRAND with the depth chosen by validation",
    thesis_items="Table 4.3 with Table 4.12's per-dataset T (beyond the thesis: T chosen per split)",
    config_class=GrandTSearchConfig,
    summary="Table 4.3's GRAND++-l runs at a T tuned for it (Table 4.12). Does GRAND++-l still beat GRAND-l when "
            "both choose T ∈ {1, 4, 16, 32} by validation, with the same number of trained models?",
    profiles={
        "smoke": {"datasets": ("cora",), "labels": (1,), "depths": (1, 4), "splits": 1, "seeds": 1, "epochs": 2,
                  "time_points": 3, "time_scan": "best_epoch"},
        "quick": {"datasets": ("cora",), "labels": (1,), "source_scales": (1.0,), "splits": 2, "seeds": 1,
                  "epochs": 15, "time_scan": "best_epoch"},
        "full": {"datasets": ("cora", "citeseer"), "splits": 100, "seeds": 1},
    },
    run=run,
    thesis=_thesis(),
    metrics=METRICS,
    claims={
        "tuned_depth_gain": Claim("Table 4.3, Table 4.12",
                                  "At the lowest labelling rate GRAND++-l is more accurate than GRAND-l; tested here "
                                  "with the depth T of both chosen by validation from the same trials."),
    },
)
