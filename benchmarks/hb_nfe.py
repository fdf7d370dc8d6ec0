"""Heavy-ball NFE benchmark: NODE vs HBNODE vs GHBNODE at tolerance 1e-5, in one run.

Point cloud (Table 3.2 models, full batch, Adam 0.01) and MNIST-quick (Table 3.3 models on a
training subset, Adam 1e-3), both with dopri5 and the adjoint at rtol = atol = 1e-5. Reports
forward and backward NFE per iteration/batch, wall time per epoch and the final loss/accuracy,
and the ratios HBNODE/NODE and GHBNODE/NODE. Target (thesis direction): backward NFE ≤ 0.5× and
forward ≤ 0.7× NODE's at equal or better accuracy.

    python benchmarks/hb_nfe.py [--iterations 100] [--train 384] [--epochs 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from odekit.data import data_root
from odekit.experiments.image_classification import ImageConfig, load_data, train_model
from odekit.experiments.pointcloud import PointCloudConfig, train_pointcloud
from odekit.experiments.timing import machine_info
from odekit.report.atomic import write_json

MODELS = ("node", "hbnode", "ghbnode")
TOL = 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100, help="point-cloud Adam iterations")
    parser.add_argument("--train", type=int, default=384, help="MNIST training images")
    parser.add_argument("--test", type=int, default=512, help="MNIST test images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hb_nfe.json")
    args = parser.parse_args()
    console = Console(width=160)
    results: dict[str, dict] = {"pointcloud": {}, "mnist": {}}

    cloud = PointCloudConfig(iterations=args.iterations, tol=TOL)
    for kind in MODELS:
        console.print(f"point cloud: {kind} …")
        history, _ = train_pointcloud(kind, cloud, seed=0)
        results["pointcloud"][kind] = {
            "nfe_forward": float(np.mean(history["nfe_forward"])),
            "nfe_backward": float(np.mean(history["nfe_backward"])),
            "seconds_per_epoch": float(np.sum(history["seconds"])), "final": float(history["loss"][-1]),
        }

    image = ImageConfig(dataset="mnist", epochs=args.epochs, batch_size=32, lr=1e-3, tol=TOL,
                        train_subset=args.train, test_subset=args.test)
    data = load_data(image, data_root(args.data_dir))
    for kind in MODELS:
        epochs = train_model(kind, image, data)
        results["mnist"][kind] = {
            "nfe_forward": float(np.mean([e["nfe_forward"] for e in epochs])),
            "nfe_backward": float(np.mean([e["nfe_backward"] for e in epochs])),
            "seconds_per_epoch": float(np.mean([e["train_seconds"] for e in epochs])),
            "final": epochs[-1]["test_accuracy"],
        }

    table = Table(title=f"NODE vs HBNODE vs GHBNODE, dopri5 + adjoint, tolerance {TOL:g}")
    for col in ("task", "model", "forward NFE", "backward NFE", "s per epoch", "final loss / accuracy",
                "fwd ratio vs NODE", "bwd ratio vs NODE"):
        table.add_column(col)
    for task, label in (("pointcloud", "final loss"), ("mnist", "test accuracy")):
        base = results[task]["node"]
        for kind in MODELS:
            r = results[task][kind]
            r["forward_ratio_vs_node"] = r["nfe_forward"] / base["nfe_forward"]
            r["backward_ratio_vs_node"] = r["nfe_backward"] / base["nfe_backward"]
            table.add_row(task, kind, f"{r['nfe_forward']:.1f}", f"{r['nfe_backward']:.1f}",
                          f"{r['seconds_per_epoch']:.1f}", f"{label} {r['final']:.4f}",
                          f"{r['forward_ratio_vs_node']:.2f}", f"{r['backward_ratio_vs_node']:.2f}")
    console.print(table)
    write_json(args.out, {"benchmark": "hb_nfe", "tolerance": TOL, "machine": machine_info(), "args": vars(args),
                          "results": results})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
