"""``hb_grand``: heavy-ball graph diffusion beside GRAND (beyond the thesis: its §4.7 / ch. 6 future work).

HB-GRAND integrates ``X'' + γX' = σ(α)(A(X) − I)X (+ C)`` as the heavy-ball system of eq. 3.43 on
the GRAND pieces (``odekit.models.GRAND(heavy_ball="hb")``); GRAND++'s source ``C`` makes
HB-GRAND++. Two sweeps on the same splits and seeds as their first-order counterparts: depth
``T`` at 20 labelled nodes per class, and labelled nodes per class at the dataset's ``T``
(GRAND-l at the authors' T, the ++ models at Table 4.12's). Per cell: test accuracy (best
validation over epochs and integration times, as for GRAND), forward and backward NFE per epoch,
seconds. Paired two-sided t-tests of each heavy-ball model against its counterpart (whether the
second order helps is an open question). And the Dirichlet energy ``E(X(t))/E(X(0))`` of GRAND-l
and HB-GRAND-l at initialisation up to a large ``T`` at two dampings: the linear theory (tested in
``tests/test_hb_grand.py``) says light damping accelerates the slowest diffusion mode (rate
``≈ λ/γ``) and slows the others to ``γ/2``, so the heavy ball keeps more energy only when damped
enough.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from ..models.graph_diffusion import dirichlet_energy
from ..report.plots import pyplot
from ..report.records import Metric
from .base import RunContext
from .claims import Claim, Verdict, gap_verdict
from .grand_thesis import TABLE_4_1, TABLE_4_3
from .node_classification import (
    SWEEP_METRICS,
    Cell,
    accuracy_lost,
    depth_cells,
    graph_experiment,
    group,
    label_cells,
    mean_accuracies,
    model_gaps,
    paired_accuracies,
    report_sweep,
    run_cells,
)
from .node_settings import DATASET_LABELS, MODELS, NodeClassificationConfig, check_config
from .node_trainer import GraphCache, build_model

# each heavy-ball model beside the first-order model it extends
COUNTERPARTS = {"hb-grand-l": "grand-l", "hb-grand++-l": "grand++-l", "ghb-grand-l": "grand-l",
                "ghb-grand++-l": "grand++-l", "hb-grand-nl": "grand-nl"}


@dataclass
class HBGrandConfig(NodeClassificationConfig):
    models: tuple[str, ...] = ("grand-l", "grand++-l", "hb-grand-l", "hb-grand++-l")
    depths: tuple[float, ...] = (1, 4, 16, 32, 64, 128)  # at 20 labelled nodes per class
    labels: tuple[int, ...] = (1, 2, 5, 10, 20)  # at the dataset's T
    energy_t_end: float = 128.0  # horizon of the Dirichlet-energy figure
    energy_dampings: tuple[float, ...] = (0.5, 1.9)  # γ of HB-GRAND-l in that figure


def _check(config: HBGrandConfig) -> None:
    check_config(config)
    if any(t <= 0 for t in config.depths) or config.energy_t_end <= 0:
        raise ValueError("depths T and energy_t_end must be positive")
    if any(m not in COUNTERPARTS and m not in COUNTERPARTS.values() for m in config.models):
        raise ValueError(f"hb_grand compares heavy-ball models with their first-order counterparts; choose from "
                         f"{', '.join([*COUNTERPARTS, *dict.fromkeys(COUNTERPARTS.values())])}")


def run(config: HBGrandConfig, ctx: RunContext) -> None:
    _check(config)
    by_depth, by_labels = depth_cells(config, config.depths, 20), label_cells(config, config.labels)
    done = run_cells(config, ctx, by_depth + by_labels, "HB-GRAND beside GRAND")
    sweeps = [(name, cells, x_of, x_name) for name, cells, x_of, x_name in (
        ("depth", by_depth, lambda c: c.t_end, "depth T"),
        ("labels", by_labels, lambda c: float(c.per_class), "labelled nodes per class")) if cells]
    for name, cells, x_of, x_name in sweeps:
        report_sweep(ctx, group(done, cells, x_of), TABLE_4_1 if name == "depth" else TABLE_4_3,
                     name=f"hb_grand_{name}", x_name=x_name, metric=f"accuracy_vs_{name}",
                     caption=f"Heavy-ball models beside GRAND against {x_name} (thesis numbers: the first-order "
                             "models' Table 4.1 / 4.3 rows).",
                     figure_caption=f"Test accuracy against {x_name}: heavy-ball models beside GRAND (dashed: "
                                    "the thesis's GRAND rows).")
    _t_tests(ctx, config, done, sweeps)
    _costs(ctx, done, sweeps)
    energies = _energy(ctx, config)
    ctx.judge(_verdicts(config, done, by_depth, energies))


def _t_tests(ctx: RunContext, config: HBGrandConfig, done: dict, sweeps: list) -> None:
    rows = []
    for name, cells, x_of, _ in sweeps:
        for model in config.models:
            base = COUNTERPARTS.get(model)
            if base not in config.models:
                continue
            for (dataset, x), pairs in sorted(paired_accuracies(done, cells, model, base, x_of).items()):
                gain = float(np.mean([a - b for a, b in pairs]))
                test = stats.ttest_rel(*zip(*pairs)) if len(pairs) > 1 else None
                rows.append([DATASET_LABELS[dataset], name, f"{x:g}", MODELS[model].label, MODELS[base].label,
                             len(pairs), f"{gain:+.2f}", f"{test.statistic:.2f}" if test else "",
                             f"{test.pvalue:.3f}" if test else ""])
    ctx.table("hb_grand_t_tests", ["dataset", "sweep", "x", "heavy-ball model", "counterpart", "pairs",
                                   "mean gain (points)", "paired t", "p (two-sided)"], rows,
              "Paired t-tests of each heavy-ball model against its first-order counterpart on the same splits and "
              "seeds (two-sided: the direction is the open question).")


def _costs(ctx: RunContext, done: dict, sweeps: list) -> None:
    rows = []
    for name, cells, x_of, _ in sweeps:
        for (dataset, model, x), results in sorted(group(done, cells, x_of).items()):
            ok = [r for r in results if r["test"] is not None]
            if ok:
                rows.append([DATASET_LABELS[dataset], name, f"{x:g}", MODELS[model].label, len(ok),
                             f"{np.mean([r['nfe_forward'] for r in ok]):.0f}",
                             f"{np.mean([r['nfe_backward'] for r in ok]):.0f}",
                             f"{np.mean([r['seconds'] for r in ok]):.1f}"])
    ctx.table("hb_grand_costs", ["dataset", "sweep", "x", "model", "runs", "forward NFE / epoch",
                                 "backward NFE / epoch", "seconds per run"], rows,
              "Cost per training run: NFE per epoch (forward, and backward after backward()) and wall seconds.")


def _energy(ctx: RunContext, config: HBGrandConfig) -> dict[str, dict[str, float]]:
    """E(X(t))/E(X(0)) of GRAND-l and HB-GRAND-l at initialisation, per dataset; returns the ratio at the end."""
    plt = pyplot()
    cache = GraphCache(ctx.data_root, config.float64)
    times = torch.linspace(0.0, config.energy_t_end, 65)
    curves = {(None, "grand-l")} | {(gamma, "hb-grand-l") for gamma in {*config.energy_dampings, config.damping}}
    fig, axes = plt.subplots(1, len(config.datasets), figsize=(6 * len(config.datasets), 4.2), squeeze=False)
    finals: dict[str, dict[str, float]] = {}
    for ax, dataset in zip(axes[0], config.datasets):
        data = cache.get(dataset)
        for gamma, model in sorted(curves, key=lambda c: (c[0] or 0.0)):
            torch.manual_seed(config.seed)
            settings = dataclasses.replace(config, damping=gamma or config.damping)
            net = build_model(settings, dataset, model, config.energy_t_end, 2, data.num_features,
                              int(data.y.max()) + 1).to(data.x.dtype).eval()
            with torch.no_grad():
                features = net.features(data.x, data.edge_index, times.to(data.x.dtype))
            columns = net.field.attention.normalise == "columns"  # rest state x_i ∝ d_i, not consensus
            degrees = net.field.graph(data.edge_index, data.num_nodes).degrees if columns else None
            energy = dirichlet_energy(features, data.edge_index, degrees)
            ratio = (energy / energy[0]).numpy()
            label = MODELS[model].label + (f", γ={gamma:g}" if gamma else "")
            finals.setdefault(dataset, {})[label] = float(ratio[-1])
            ax.semilogy(times.numpy(), ratio, label=label)
        ax.set_title(f"{DATASET_LABELS[dataset]}: Dirichlet energy at initialisation")
        ax.set_xlabel("t")
        ax.set_ylabel("E(X(t)) / E(X(0))" + (" of x_i / d_i" if degrees is not None else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    ctx.figure("hb_grand_dirichlet_energy", fig,
               caption="Dirichlet energy of the diffused features over t at initialisation (same encoder): GRAND-l "
                       "against HB-GRAND-l at two dampings γ.")
    rows = [[DATASET_LABELS[d], label, f"{v:.3e}"] for d, per in finals.items() for label, v in per.items()]
    ctx.table("hb_grand_energy", ["dataset", "model", f"E(X({config.energy_t_end:g})) / E(X(0))"], rows,
              "Energy left at the end of the horizon, at initialisation.")
    return finals


def _verdicts(config: HBGrandConfig, done: dict, by_depth: list[Cell], energies: dict) -> dict[str, Verdict]:
    kept = [(f"{DATASET_LABELS[d]} T={config.energy_t_end:g} {label}", value, per["GRAND-l"])
            for d, per in energies.items() for label, value in per.items() if label.startswith("HB-GRAND-l")]
    means = mean_accuracies(group(done, by_depth, lambda c: c.t_end))
    drops = accuracy_lost(means, "hb-grand-l", "grand-l")
    nfe = {key: float(np.mean([r["nfe_forward"] for r in results if r["test"] is not None]))
           for key, results in group(done, by_depth, lambda c: c.t_end).items()
           if any(r["test"] is not None for r in results)}
    cheaper = [(where, theirs, ours) for where, ours, theirs in model_gaps(
        nfe, "hb-grand-l", "grand-l", lambda d, xs: xs[-1:], x_name="T=")]
    return {
        "no_collapse": gap_verdict(kept, "energy left E(T)/E(0), HB-GRAND-l vs GRAND-l (at initialisation)",
                                   "the run computed no energy curves"),
        "holds_depth": gap_verdict(drops, "accuracy lost from the shallowest to the deepest T, GRAND-l vs HB-GRAND-l "
                                          "(points)", "the run has GRAND-l and HB-GRAND-l at fewer than two common "
                                                      "depths"),
        "fewer_nfe": gap_verdict(cheaper, "forward NFE per epoch at the deepest T, GRAND-l vs HB-GRAND-l",
                                 "the run has no depth with both GRAND-l and HB-GRAND-l"),
    }


EXPERIMENT = graph_experiment(
    name="hb_grand",
    sweeps=("depths", "labels"),
    check=_check,
    quick_seconds=55,
    title="Heavy-ball graph diffusion (HB-GRAND) beside GRAND",
    thesis_items="§4.7, ch. 6 (future work; beyond the thesis)",
    config_class=HBGrandConfig,
    metrics={**SWEEP_METRICS, "accuracy_vs_depth": Metric("test accuracy (%), 20 labels/class", "T")},
    summary="The thesis closes chapters 4 and 6 suggesting that a second-order (heavy-ball) graph ODE, a damped wave "
            "equation, would naturally overcome over-smoothing and could cut NFEs as HBNODE does; it runs no such "
            "model. Here it is measured, whichever way it comes out.",
    profiles={
        "smoke": {"datasets": ("cora",), "models": ("grand-l", "hb-grand-l"), "depths": (1, 4), "labels": (1,),
                  "splits": 1, "seeds": 1, "epochs": 2, "time_points": 3, "time_scan": "best_epoch",
                  "energy_t_end": 8.0},
        # GRAND-l and HB-GRAND-l only: with the two ++ models as well it took 102 s of the main job's 20 minutes
        "quick": {"datasets": ("cora",), "models": ("grand-l", "hb-grand-l"), "depths": (4, 32), "labels": (),
                  "splits": 1, "seeds": 1, "epochs": 15, "time_scan": "best_epoch"},
        "full": {"splits": 20, "seeds": 1},
    },
    run=run,
    claims={
        "no_collapse": Claim("§4.7, ch. 6", "A heavy-ball graph ODE naturally overcomes over-smoothing: its Dirichlet "
                                            "energy does not collapse at large T as GRAND's does."),
        "holds_depth": Claim("§4.7, ch. 6", "HB-GRAND-l loses less accuracy than GRAND-l as T grows."),
        "fewer_nfe": Claim("ch. 3 (HBNODE), §4.7", "The heavy ball cuts NFEs: HB-GRAND-l needs fewer forward NFE per "
                                                   "epoch than GRAND-l."),
    },
)
