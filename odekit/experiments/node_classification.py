"""The grid of the chapter-4 experiments (``grand_labels``, ``grand_depth``, ``grand_variants``,
``hb_grand``): its cells, their run on the experiment's executor, and the summaries and tables
of the results.

A *cell* is one training run: (dataset, model, labelled nodes per class, depth, split, seed),
trained by :func:`~odekit.experiments.node_trainer.train_cell` with the settings of
:mod:`~odekit.experiments.node_settings`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from ..report.plots import pyplot
from ..report.records import Key, Metric
from .base import Experiment, RunContext
from .claims import Outcome, ThesisNumber, Verdict
from .grid import run_grid
from .node_settings import (
    DATASET_LABELS,
    FIXED_SPLIT_SEED,
    GRANDPP_T,
    GRID_FIELDS,
    MODEL_LABELS,
    MODELS,
    RESPLIT,
    SETTINGS,
    NodeClassificationConfig,
    missing_graphs,
)
from .node_trainer import GraphCache, split_for, train_cell


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    per_class: int
    run: int  # split index
    seed: int
    t_end: float | None = None  # GRAND family depth (None: the dataset's default)
    depth: int = 2  # baseline layers
    source_scale: float | None = None  # GRAND++'s source scale (None: the config's)

    @property
    def key(self) -> str:
        key = (f"{self.dataset}|{self.model}|k={self.per_class}|T={self.t_end}|L={self.depth}"
               f"|run={self.run}|seed={self.seed}")
        return key if self.source_scale is None else f"{key}|s={self.source_scale}"


def graph_experiment(*, sweeps: tuple[str, ...], check: Callable[[Any], object], **fields: Any) -> Experiment:
    """The :class:`Experiment` of a chapter-4 grid: the experiment's own ``fields`` and settings
    ``check`` with what they all share — the graphs' data check and labels, two threads, and the grid
    fields (``GRID_FIELDS`` and ``sweeps``, the config fields of the experiment's own swept coordinates)."""
    # sparse graph products: 2 threads beat 1 on a quiet 2-core machine (grand_labels' quick profile:
    # 371 s at 1 thread, 265 s at 2; grand_depth 116 s, 90 s)
    return Experiment(threads=2, grid_fields=(*GRID_FIELDS, *sweeps), check=check, model_labels=MODEL_LABELS,
                      dataset_labels=DATASET_LABELS, missing_data=missing_graphs, **fields)


def cell_record(config: NodeClassificationConfig, data_root: Path, cell: Cell) -> dict:
    """Train one cell on its split: its :class:`CellResult` and its coordinates (the grid's work function)."""
    spec = MODELS[cell.model]
    if cell.source_scale is not None:
        config = dataclasses.replace(config, source_scale=cell.source_scale)
    data = _graphs(data_root, config.float64).get(cell.dataset, spec.rewiring)
    split = split_for(cell.dataset, data, cell.per_class, cell.run)
    source_mask = None
    if spec.source and (spec.source_nodes or config.source_nodes) == "reference" and cell.dataset in RESPLIT:
        source_mask = split_for(cell.dataset, data, cell.per_class, FIXED_SPLIT_SEED).train
    result = train_cell(config, cell.dataset, data, split, cell.model, cell.seed, cell.t_end, cell.depth,
                        source_mask)
    return {**result.as_dict(), **dataclasses.asdict(cell)}


@functools.lru_cache(maxsize=2)
def _graphs(root: Path, float64: bool) -> GraphCache:
    """One graph cache per process and data root: a process (or Ray worker) loads each graph once."""
    return GraphCache(root, float64)


def describe_cell(cell: Cell, record: dict) -> str:
    spec = MODELS[cell.model]
    shown = "NA" if record["test"] is None else f"{100 * record['test']:.1f}%"
    depth = f"L={cell.depth}" if spec.baseline else f"T={cell.t_end or SETTINGS[cell.dataset].t_end:g}"
    if cell.source_scale is not None:
        depth += f" s={cell.source_scale:g}"
    return (f"{cell.dataset} {spec.label} k={cell.per_class} {depth} run {cell.run} seed {cell.seed}: test {shown} "
            f"({record['seconds']:.0f} s, {record['status']})")


def run_cells(config: NodeClassificationConfig, ctx: RunContext, cells: list[Cell], description: str) -> dict:
    """Train every cell not yet in the checkpoint on the run's executor; returns ``{cell.key: record}``."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return run_grid(ctx, cells, functools.partial(cell_record, config, ctx.data_root), description, describe_cell)


def summarise(results: list[dict]) -> tuple[float | None, float | None, int, int]:
    """Mean and std (in %) of the test accuracy of successful runs (std ``None`` for a single run), their
    count, and the failures."""
    ok = [100 * r["test"] for r in results if r["test"] is not None]
    failed = len(results) - len(ok)
    if not ok:
        return None, None, 0, failed
    mean = sum(ok) / len(ok)
    std = math.sqrt(sum((v - mean) ** 2 for v in ok) / (len(ok) - 1)) if len(ok) > 1 else None  # one run: no spread
    return mean, std, len(ok), failed


def format_accuracy(mean: float | None, std: float | None, failed: int = 0) -> str:
    if mean is None:
        return "NA"
    text = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return text + (f" ({failed} failed)" if failed else "")


def runs_of(config: NodeClassificationConfig) -> list[tuple[int, int]]:
    """(split, seed) pairs of the protocol: splits 0…``splits``−1, each with the initialisation seeds
    ``seed``…``seed`` + ``seeds``−1 (``--seed`` moves them; the splits stay the thesis's)."""
    return [(run, seed) for run in range(config.splits) for seed in range(config.seed, config.seed + config.seeds)]


def depth_cells(config, depths, per_class: int) -> list[Cell]:
    """Every model of ``config`` integrated to each of ``depths`` at ``per_class`` labels, on every split."""
    return [Cell(d, m, per_class, run, seed, t_end=float(t)) for d in config.datasets for t in depths
            for run, seed in runs_of(config) for m in config.models]


def label_cells(config, labels) -> list[Cell]:
    """Every model of ``config`` at each of ``labels`` labelled nodes per class and its dataset's T:
    Table 4.12's for the models with a source, the authors' GRAND T otherwise."""
    return [Cell(d, m, k, run, seed, t_end=GRANDPP_T.get(d) if MODELS[m].source else None)
            for d in config.datasets for k in labels for run, seed in runs_of(config) for m in config.models]


def labels_text(k: float) -> str:
    return f"{k:g} label{'s' if k != 1 else ''}/class"


def group(done: dict, cells: list[Cell], x_of) -> dict[tuple[str, str, float], list[dict]]:
    """Results of ``cells`` by (dataset, model, x) where ``x_of(cell)`` is the swept quantity."""
    grouped: dict[tuple[str, str, float], list[dict]] = {}
    for cell in cells:
        grouped.setdefault((cell.dataset, cell.model, x_of(cell)), []).append(done[cell.key])
    return grouped


def thesis_cell(table: dict, model: str, dataset: str, x: float):
    """The thesis's (mean, std) for a cell, ``None`` for its NA, or ``"absent"`` where it has no entry."""
    row = table.get(model.replace("-refsrc", ""), {}).get(dataset, {})
    return row.get(int(x) if float(x).is_integer() else x, "absent")


# The metrics of the chapter-4 sweeps: test accuracy (%) against one swept coordinate.
SWEEP_METRICS = {
    "accuracy_vs_labels": Metric("test accuracy (%)", "labels/class"),
    "accuracy_vs_depth": Metric("test accuracy (%)", "T"),
    "accuracy_vs_layers": Metric("test accuracy (%)", "layers"),
}


def table_numbers(table: dict, metric: str, source: Callable[[str, str], str],
                  authors_code: bool = True) -> dict[Key, ThesisNumber]:
    """Every entry of a chapter-4 table (``table[model][dataset][x]`` = mean ± std, ``None`` for NA) as the
    thesis number of ``Key(metric, model, dataset, x)``; ``source(model, dataset)`` names its table.
    With ``authors_code`` the authors'-code variant of GRAND++-l is compared with GRAND++-l's number too
    (for experiments that train it)."""
    numbers = {}
    for model, per_dataset in table.items():
        variants = (model, f"{model}-refsrc") if authors_code and f"{model}-refsrc" in MODELS else (model,)
        for variant in variants:
            for dataset, row in per_dataset.items():
                for x, value in row.items():
                    if value is not None:
                        numbers[Key(metric, variant, dataset, float(x))] = ThesisNumber(
                            value[0], f"{source(model, dataset)}, {DATASET_LABELS[dataset]}, {MODELS[model].label}",
                            std=value[1])
    return numbers


def paired_accuracies(done: dict, cells: list[Cell], challenger: str, base: str, x_of
                      ) -> dict[tuple[str, float], list[tuple[float, float]]]:
    """Test accuracies (%) of ``challenger`` and ``base`` on the same split and seed, by (dataset, x);
    pairs where either run failed are left out."""
    by_key = {(c.dataset, c.model, x_of(c), c.run, c.seed): done[c.key]["test"] for c in cells if c.key in done}
    pairs: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for (dataset, model, x, run, seed), ours in by_key.items():
        theirs = by_key.get((dataset, base, x, run, seed))
        if model == challenger and ours is not None and theirs is not None:
            pairs.setdefault((dataset, x), []).append((100 * ours, 100 * theirs))
    return pairs


@dataclass(frozen=True)
class GainTest:
    """One model's gain over another on the same splits: the mean difference (points) and the one-sided
    t-tests that it is positive, unpaired (Welch, eq. 4.18) and paired (eq. 4.19), by scipy."""

    pairs: int
    gain: float
    unpaired_t: float
    unpaired_p: float
    paired_t: float
    paired_p: float


def gain_test(pairs: list[tuple[float, float]]) -> GainTest | None:
    """The :class:`GainTest` of ``(challenger, base)`` accuracy pairs; ``None`` with fewer than two."""
    if len(pairs) < 2:
        return None
    ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
    welch = stats.ttest_ind(ours, theirs, equal_var=False, alternative="greater")
    paired = stats.ttest_rel(ours, theirs, alternative="greater")
    return GainTest(len(pairs), sum(a - b for a, b in pairs) / len(pairs), float(welch.statistic),
                    float(welch.pvalue), float(paired.statistic), float(paired.pvalue))


# One-sided p below which a gain counts as significant (the thesis's t > 1.66 at n = 100 is p < 0.05).
SIGNIFICANT_P = 0.05


def gain_verdict(found: list[tuple[str, GainTest]], claimed: str) -> Verdict:
    """Agrees when every ``(where, test)`` of ``found`` shows a significant positive gain; ``claimed``
    says what is compared."""
    shown = "; ".join(f"{where} {t.gain:+.2f} points, p = {t.paired_p:.3g} ({t.pairs} pairs)" for where, t in found)
    if not found:
        return Verdict(Outcome.NOT_COMPARABLE, f"{claimed}: the run lacks one of the two models, or has fewer than "
                                               "two paired runs of them")
    if any(t.gain <= 0 for _, t in found):
        return Verdict(Outcome.DIFFERS, f"{claimed}: {shown}")
    if all(t.paired_p < SIGNIFICANT_P for _, t in found):
        return Verdict(Outcome.AGREES, f"{claimed}: {shown}")
    return Verdict(Outcome.NOT_COMPARABLE, f"gains in the claimed direction but not significant at "
                                           f"p < {SIGNIFICANT_P:g} with this few pairs (thesis: 100): {shown}")


def mean_accuracies(grouped: dict) -> dict[tuple[str, str, float], float]:
    """Mean test accuracy (%) of each (dataset, model, x) of ``grouped`` that has a successful run."""
    means = {key: summarise(results)[0] for key, results in grouped.items()}
    return {key: mean for key, mean in means.items() if mean is not None}


def _shared(means: dict, dataset: str, a: str, b: str) -> list[float]:
    """The swept values at which both models have a mean on ``dataset``, in order."""
    return sorted({x for d, m, x in means if d == dataset and m == a}
                  & {x for d, m, x in means if d == dataset and m == b})


def model_gaps(means: dict, better: str, worse: str, xs: Callable[[str, list[float]], list[float]],
               x_name: str = "") -> list[tuple[str, float, float]]:
    """``(where, better's mean, worse's mean)`` on every dataset at the ``xs(dataset, swept values)`` both have."""
    return [(f"{DATASET_LABELS[dataset]} {x_name}{x:g}", means[(dataset, better, x)], means[(dataset, worse, x)])
            for dataset in dict.fromkeys(d for d, _, _ in means)
            for x in xs(dataset, _shared(means, dataset, better, worse))]


def accuracy_lost(means: dict, model: str, baseline: str) -> list[tuple[str, float, float]]:
    """``(where, baseline's loss, model's loss)``: accuracy points each loses from the shallowest to the
    deepest ``T`` both ran, per dataset — the pairs of the claim that ``model`` holds its accuracy better."""
    pairs = []
    for dataset in dict.fromkeys(d for d, _, _ in means):
        shared = _shared(means, dataset, model, baseline)
        if len(shared) > 1:
            lost = {m: means[(dataset, m, shared[0])] - means[(dataset, m, shared[-1])] for m in (model, baseline)}
            pairs.append((f"{DATASET_LABELS[dataset]} T={shared[0]:g}→{shared[-1]:g}", lost[baseline], lost[model]))
    return pairs


def report_sweep(ctx: RunContext, grouped: dict, table: dict, *, name: str, x_name: str, metric: str, caption: str,
                 figure_caption: str) -> None:
    """One table (ours beside the thesis, per cell), the mean accuracies as records of ``metric``, and a
    figure of accuracy against the swept ``x``."""
    rows = []
    for (dataset, model, x), results in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        mean, std, n, failed = summarise(results)
        ref = thesis_cell(table, model, dataset, x)
        ref_text = "—" if ref == "absent" else "NA" if ref is None else f"{ref[0]:.2f} ± {ref[1]:.2f}"
        verdict = ""
        if mean is not None and ref not in ("absent", None):
            verdict = "within ±1 std" if abs(mean - ref[0]) <= ref[1] else f"{mean - ref[0]:+.2f}"
        nfe = [r["nfe_forward"] for r in results if r["nfe_forward"]]
        rows.append([DATASET_LABELS[dataset], MODELS[model].label, f"{x:g}", format_accuracy(mean, std, failed), n,
                     ref_text, verdict, f"{sum(nfe) / len(nfe):.0f}" if nfe else "",
                     "; ".join(sorted({r["status"] for r in results if r["status"] != "ok"}))[:160]])
        if mean is not None:
            ctx.record(Key(metric, model, dataset, x), round(mean, 2))
        elif failed:
            ctx.record(Key(metric, model, dataset, x), "NA (solver failed)")
    ctx.table(name, ["dataset", "model", x_name, "odekit test acc (%)", "runs", "thesis", "vs thesis",
                     "forward NFE / epoch", "failures"], rows, caption)
    _plot_sweep(ctx, grouped, table, name, x_name, figure_caption)


def _plot_sweep(ctx: RunContext, grouped: dict, table: dict, name: str, x_name: str, caption: str) -> None:
    plt = pyplot()
    datasets = sorted({d for d, _, _ in grouped})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        models = sorted({m for d, m, _ in grouped if d == dataset})
        for i, model in enumerate(models):
            xs = sorted(x for d, m, x in grouped if d == dataset and m == model)
            stats = [summarise(grouped[(dataset, model, x)]) for x in xs]
            shown = [(x, s[0], s[1] or 0.0) for x, s in zip(xs, stats) if s[0] is not None]
            colour = f"C{i}"
            if shown:
                ax.errorbar([p[0] for p in shown], [p[1] for p in shown], yerr=[p[2] for p in shown], color=colour,
                            marker="o", capsize=3, label=f"{MODELS[model].label} (odekit)")
            thesis = [(x, thesis_cell(table, model, dataset, x)) for x in xs]
            thesis = [(x, v[0]) for x, v in thesis if v not in ("absent", None)]
            if thesis and "-refsrc" not in model:
                ax.plot([p[0] for p in thesis], [p[1] for p in thesis], color=colour, linestyle="--", marker="x",
                        alpha=0.6, label=f"{MODELS[model].label} (thesis)")
        ax.set_xscale("log", base=2)
        ticks = sorted({x for d, _, x in grouped if d == dataset})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_title(DATASET_LABELS[dataset])
        ax.set_xlabel(x_name)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(name, fig, caption)
