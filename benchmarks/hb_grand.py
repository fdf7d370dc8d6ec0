"""HB-GRAND against GRAND: NFE and wall time per training epoch, beside the accuracy each reaches.

On Cora (20 labelled nodes per class, split 0, seed 0; the authors' GRAND-l settings, dopri5, float32,
two threads) GRAND-l and HB-GRAND-l (and GRAND++-l / HB-GRAND++-l) train for the same epochs at each
depth T. Per model and depth: forward and backward NFE per epoch, seconds per epoch (training and the
per-epoch evaluation), and the test accuracy at the best validation epoch. The ratios HB / first order
are the benchmark's numbers; a cost ratio means little where the accuracies differ, so both are shown.

    python benchmarks/hb_grand.py [--depths 4,16,32] [--epochs 30] [--out benchmarks/results/hb_grand.json]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from odekit.data import data_root
from odekit.experiments.hb_grand import COUNTERPARTS
from odekit.experiments.node_settings import NodeClassificationConfig
from odekit.experiments.node_trainer import GraphCache, split_for, train_cell
from odekit.experiments.timing import machine_info
from odekit.report.atomic import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="4,16,32")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", default="grand-l,hb-grand-l,grand++-l,hb-grand++-l")
    parser.add_argument("--damping", type=float, default=0.5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/hb_grand.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console()
    config = dataclasses.replace(NodeClassificationConfig(), epochs=args.epochs, time_scan="best_epoch",
                                 damping=args.damping)
    data = GraphCache(data_root(args.data_dir), float64=False).get("cora")
    split = split_for("cora", data, 20, 0)
    models = args.models.split(",")
    results = []
    for depth in (float(d) for d in args.depths.split(",")):
        for model in models:
            cell = train_cell(config, "cora", data, split, model, seed=0, t_end=depth,
                              source_mask=split.train if "++" in model else None)
            results.append({"model": model, "t_end": depth, "test": cell.test, "nfe_forward": cell.nfe_forward,
                            "nfe_backward": cell.nfe_backward, "seconds_per_epoch": cell.seconds / args.epochs,
                            "status": cell.status})
            console.print(f"T={depth:g} {model}: test {cell.test}, NFE {cell.nfe_forward:.0f}/{cell.nfe_backward:.0f}, "
                          f"{cell.seconds / args.epochs:.2f} s/epoch ({cell.status})")
    table = Table(title=f"HB-GRAND vs GRAND on Cora, {args.epochs} epochs, γ₀ = {args.damping:g}")
    for column in ("T", "heavy ball / first order", "test acc (%)", "forward NFE ratio", "backward NFE ratio",
                   "wall ratio"):
        table.add_column(column)
    by = {(r["model"], r["t_end"]): r for r in results}
    ratios = []
    for (model, depth), ours in by.items():
        base = by.get((COUNTERPARTS.get(model), depth))
        if base is None or ours["test"] is None or base["test"] is None:
            continue
        entry = {"model": model, "counterpart": base["model"], "t_end": depth,
                 **{f"{k}_ratio": ours[k] / base[k] for k in ("nfe_forward", "nfe_backward", "seconds_per_epoch")},
                 "test": ours["test"], "counterpart_test": base["test"]}
        ratios.append(entry)
        table.add_row(f"{depth:g}", f"{model} / {base['model']}",
                      f"{100 * ours['test']:.1f} / {100 * base['test']:.1f}",
                      f"{entry['nfe_forward_ratio']:.2f}", f"{entry['nfe_backward_ratio']:.2f}",
                      f"{entry['seconds_per_epoch_ratio']:.2f}")
    console.print(table)
    write_json(Path(args.out), {"machine": machine_info(), "settings": vars(args), "runs": results, "ratios": ratios})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
