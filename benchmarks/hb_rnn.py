"""Heavy-ball RNN hybrids: ODE-RNN vs SONODE-RNN vs HBNODE-RNN vs GHBNODE-RNN on plane vibration.

One run of the ``plane_vibration`` quick profile (the same windows, sizes, initialisation and
optimiser) for each model: per-epoch wall time, forward and backward NFE per batch, and the test
loss. Target (thesis direction, Fig 3.10): (G)HBNODE-RNN test loss below ODE-RNN's, and their
backward NFE ≤ SONODE-RNN's.

    python benchmarks/hb_rnn.py [--epochs N] [--set key=value ...] [--data-dir DIR] [--out ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from odekit.data import data_root
from odekit.experiments import get
from odekit.experiments.base import config_to_dict
from odekit.experiments.hybrid_training import LABELS, build_model, load_splits, plan_of, train_hybrid
from odekit.experiments.plane_vibration import TASK
from odekit.experiments.timing import machine_info
from odekit.report.atomic import write_json

MODELS = ("odernn", "sonode", "hbnode", "ghbnode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="override the quick profile's epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="other overrides of the plane_vibration quick profile")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hb_rnn.json")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    if args.epochs is not None:
        overrides["epochs"] = str(args.epochs)
    config = get("plane_vibration").config("quick", overrides, models=MODELS)
    console = Console(width=160)
    train, test = load_splits(TASK, config, data_root(args.data_dir))
    results = {}
    for kind in MODELS:
        console.print(f"{LABELS[kind]} …")
        epochs = train_hybrid(build_model(TASK, kind, config), LABELS[kind], train, test, plan_of(TASK, config))
        results[kind] = {
            "seconds_per_epoch": float(np.mean([e["train_seconds"] for e in epochs])),
            "nfe_forward": float(np.mean([e["nfe_forward"] for e in epochs])),
            "nfe_backward": float(np.mean([e["nfe_backward"] for e in epochs])),
            "test_loss": epochs[-1]["test_loss"], "epochs": epochs,
        }
    table = Table(title=f"plane vibration quick profile: {len(train)} training / {len(test)} test windows, "
                        f"{config.epochs} epochs, tol {config.tol:g}, {config.gradient}")
    for col in ("model", "s per epoch", "forward NFE / batch", "backward NFE / batch", "final test loss"):
        table.add_column(col)
    for kind, r in results.items():
        table.add_row(LABELS[kind], f"{r['seconds_per_epoch']:.1f}", f"{r['nfe_forward']:.0f}",
                      f"{r['nfe_backward']:.0f}", f"{r['test_loss']:.5f}")
    console.print(table)
    heavy = ("hbnode", "ghbnode")
    loss_ok = all(results[k]["test_loss"] < results["odernn"]["test_loss"] for k in heavy)
    nfe_ok = all(results[k]["nfe_backward"] <= results["sonode"]["nfe_backward"] for k in heavy)
    verdict = {"test_loss_below_odernn": loss_ok, "backward_nfe_at_most_sonode": nfe_ok, "met": loss_ok and nfe_ok}
    console.print(f"target: (G)HBNODE-RNN test loss < ODE-RNN's: {loss_ok}; backward NFE ≤ SONODE-RNN's: {nfe_ok} → "
                  f"{'MET' if verdict['met'] else 'MISSED'}")
    write_json(args.out, {"benchmark": "hb_rnn", "config": config_to_dict(config),
                          "machine": machine_info(), "results": results, "target": verdict})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
