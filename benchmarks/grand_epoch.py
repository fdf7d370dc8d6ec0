"""GRAND-l training epoch: odekit's engine vs torchdiffeq integrating the same model, in one run.

For each graph (Cora, Coauthor CS; float32, the authors' settings: dopri5 forward, Cora by
backprop, Coauthor CS by the adjoint with dopri5) two copies of one GRAND-l model train side by
side, epochs interleaved: one integrates with ``odekit.solve`` (its ODE block), the other with
``torchdiffeq.odeint`` / ``odeint_adjoint`` on the same vector field. It prints the median epoch
time, forward and backward NFE per epoch, and the ratio odekit / torchdiffeq, and writes JSON.
Target (issue 6): odekit ≤ 0.7× torchdiffeq's epoch time at the same NFE.

    python benchmarks/grand_epoch.py [--epochs 8] [--datasets cora,coauthor_cs] [--device cuda] [--out ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from odekit.data import data_root
from odekit.experiments.node_settings import OPTIMIZERS, SETTINGS, NodeClassificationConfig
from odekit.experiments.node_trainer import GraphCache, build_model, split_for
from odekit.experiments.timing import machine_info
from odekit.report.atomic import write_json

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - the peer is a test extra
    sys.exit("this benchmark compares against torchdiffeq: pip install torchdiffeq")


class CountingField(torch.nn.Module):
    """The model's field, counting calls made with and without gradient recording."""

    def __init__(self, field: torch.nn.Module) -> None:
        super().__init__()
        self.field = field
        self.calls = 0
        self.args = None  # the DiffusionInputs of the current solve

    def forward(self, t, y):
        self.calls += 1
        return self.field(t, y, self.args)


class TorchdiffeqBlock(torch.nn.Module):
    """Drop-in for :class:`odekit.models.block.ODEBlock` that integrates with torchdiffeq."""

    def __init__(self, block) -> None:
        super().__init__()
        self.counter = CountingField(block.dynamics)
        self.block = block
        self.nfe = self.nfe_backward = 0

    def forward(self, state, times=None, adjoint_params=None, args=None):
        b = self.block
        t = times if times is not None else torch.tensor([0.0, b.t_end], dtype=state.dtype, device=state.device)
        self.counter.calls = 0
        self.counter.args = args  # torchdiffeq has no args channel: the field holds them for the call
        if b.gradient == "adjoint":
            # torchdiffeq's adjoint needs the tensors the field uses as parameters, as odekit's does
            held = [x for x in (args.weights, args.x0, args.source) if x is not None]
            out = torchdiffeq.odeint_adjoint(
                self.counter, state, t, rtol=b.rtol, atol=b.atol, method=b.method,
                adjoint_rtol=b.adjoint_rtol, adjoint_atol=b.adjoint_atol, adjoint_method=b.adjoint_method,
                adjoint_params=tuple(p for p in (*adjoint_params, *held) if p.requires_grad))
        else:
            out = torchdiffeq.odeint(self.counter, state, t, rtol=b.rtol, atol=b.atol, method=b.method)
        self.nfe = self.counter.calls
        return out if times is not None else out[-1]


def epoch(model, data, split, optimizer, counter=None) -> tuple[float, int, int]:
    """One training epoch: (seconds, forward NFE, backward NFE)."""
    synchronise(data.x.device)
    start = time.perf_counter()
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(data.x, data.edge_index)[split.train], data.y[split.train])
    if counter is None:
        forward = model.stats.nfe
        loss.backward()
        backward = model.stats.nfe_backward
    else:
        forward = counter.calls
        loss.backward()
        backward = counter.calls - forward
        if model.block.block.gradient == "backprop":
            backward = forward  # backprop through the graph: one VJP per recorded evaluation
    optimizer.step()
    synchronise(data.x.device)
    return time.perf_counter() - start, forward, backward


def synchronise(device: torch.device) -> None:
    """Wait for the accelerator's queued work, so wall times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, data, epochs: int, device: torch.device = torch.device("cpu")) -> dict:
    """Median epoch time and NFE of odekit's and torchdiffeq's copy of one GRAND-l on ``device``."""
    config = NodeClassificationConfig()
    split = split_for(name, data, 20, 0)
    data = data.to(device)
    split = dataclasses.replace(split, train=split.train.to(device), val=split.val.to(device),
                                test=split.test.to(device))
    classes = int(data.y.max()) + 1
    torch.manual_seed(0)
    ours = build_model(config, name, "grand-l", None, 2, data.num_features, classes).to(device)
    theirs = copy.deepcopy(ours)
    theirs.block = TorchdiffeqBlock(theirs.block)
    s = SETTINGS[name]
    optimisers = [OPTIMIZERS[s.optimizer](m.parameters(), lr=s.lr, weight_decay=s.weight_decay) for m in (ours, theirs)]
    samples = {"odekit": [], "torchdiffeq": []}
    for i in range(epochs + 1):  # the first epoch of each warms up and is not timed
        for label, model, optimiser in (("odekit", ours, optimisers[0]), ("torchdiffeq", theirs, optimisers[1])):
            counter = model.block.counter if label == "torchdiffeq" else None
            record = epoch(model, data, split, optimiser, counter)
            if i:
                samples[label].append(record)
    row = {"dataset": name, "nodes": data.num_nodes, "gradient": ours.block.gradient, "device": str(device)}
    for label, records in samples.items():
        row[label] = {"epoch_s": statistics.median(r[0] for r in records),
                      "nfe_forward": statistics.mean(r[1] for r in records),
                      "nfe_backward": statistics.mean(r[2] for r in records)}
    o, t = row["odekit"], row["torchdiffeq"]
    row["ratio_epoch"] = o["epoch_s"] / t["epoch_s"]
    nfe_o, nfe_t = o["nfe_forward"] + o["nfe_backward"], t["nfe_forward"] + t["nfe_backward"]
    row["ratio_per_nfe"] = (o["epoch_s"] / nfe_o) / (t["epoch_s"] / nfe_t)
    row["target_met"] = row["ratio_epoch"] <= 0.7
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--datasets", default="cora,coauthor_cs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/grand_epoch.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)  # PyG / sparse-format notices
    cache = GraphCache(data_root(), float64=False)
    console = Console()
    rows = []
    for name in args.datasets.split(","):
        console.print(f"[bold]{name}[/]: {args.epochs} timed epochs per engine …")
        rows.append(measure(name, cache.get(name), args.epochs, torch.device(args.device)))
    table = Table(title="GRAND-l training epoch (median), odekit vs torchdiffeq")
    for column in ("dataset", "gradient", "odekit s", "NFE f/b", "torchdiffeq s", "NFE f/b", "ratio",
                   "ratio per NFE", "≤ 0.7×"):
        table.add_column(column)
    for r in rows:
        o, t = r["odekit"], r["torchdiffeq"]
        table.add_row(r["dataset"], r["gradient"], f"{o['epoch_s']:.3f}",
                      f"{o['nfe_forward']:.0f}/{o['nfe_backward']:.0f}", f"{t['epoch_s']:.3f}",
                      f"{t['nfe_forward']:.0f}/{t['nfe_backward']:.0f}", f"{r['ratio_epoch']:.2f}",
                      f"{r['ratio_per_nfe']:.2f}", "yes" if r["target_met"] else "no")
    console.print(table)
    write_json(args.out, {"benchmark": "grand_epoch", "machine": machine_info(), "epochs": args.epochs,
                          "results": rows})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
