"""Accelerator check: odekit on a GPU against the same computation on the CPU, then timings
against torchdiffeq on that GPU, in one short run (the script to spend a lent device's minutes on).

Correctness (float64, each must agree with the CPU to ``TOLERANCE`` relative):
- every registered method (explicit, fixed-step, proximal) on a linear system;
- adjoint gradients against backprop gradients, and ``odekit.odeint`` against ``torchdiffeq.odeint``;
- the graph diffusion's sparse product and its sampled weight gradient (CSR, ``sampled_addmm``);
- GRAND-l, GRAND++-l (both initial conditions), GRAND-nl, GRAND-l with edge sampling, by backprop
  and by the adjoint; the heavy-ball family (NODE … GHBNODE): outputs and every parameter's gradient;
- FFJORD's ODENVP (trainable T) by DOPRI5 with the adjoint and by proximal BDF2, unrolled and with
  ``gradient="implicit"``: log p, gradients and samples.
Timing (float32, wall time after ``torch.cuda.synchronize``): the solver-overhead cases of
``solver_overhead.py`` and, where the data root holds them, ``grand_epoch.py``'s GRAND-l epochs.

    python benchmarks/cuda_check.py [--device cuda] [--datasets cora,coauthor_cs] [--out ...]

Exits with status 1 if any check disagrees. ``--device cpu`` runs the same code here (checks
against themselves; useful to test the script).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

import odekit
from odekit.experiments.timing import machine_info
from odekit.models import pointcloud_model
from odekit.models.cnf import ODENVP
from odekit.models.grand import GRAND
from odekit.models.graph_diffusion import Adjacency, _WeightedPropagation
from odekit.report.atomic import write_json
from odekit.solve import METHODS

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - the peer is a test extra
    sys.exit("this check compares against torchdiffeq: pip install torchdiffeq")

sys.path.insert(0, str(Path(__file__).parent))
import grand_epoch  # noqa: E402  (a sibling benchmark, reused for the GRAND timing)
import solver_overhead  # noqa: E402

TOLERANCE = 1e-8
F64 = torch.float64


def relative_error(a, b) -> float:
    """Largest relative difference over matching tensors (or tuples / lists of tensors)."""
    if isinstance(a, (tuple, list)):
        return max(relative_error(x, y) for x, y in zip(a, b))
    a, b = a.detach().cpu(), b.detach().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def seeded(build: Callable[[torch.device], object], device: torch.device):
    """``build(device)`` from seed 0, so two builds draw the same weights and data."""
    torch.manual_seed(0)
    return build(device)


def on_both(build: Callable[[torch.device], object], device: torch.device) -> float:
    """Run ``build`` on the CPU and on ``device`` from the same seed; their relative difference."""
    return relative_error(seeded(build, device), seeded(build, torch.device("cpu")))


def linear_system(method: str) -> Callable[[torch.device], torch.Tensor]:
    """A stable 6-dimensional linear ODE, batch of 4, integrated by ``method``."""
    def build(device: torch.device) -> torch.Tensor:
        m = torch.randn(6, 6, dtype=F64)
        a = (-(m @ m.T) / 6 - 0.1 * torch.eye(6, dtype=F64)).to(device)
        y0 = torch.randn(4, 6, dtype=F64, device=device)
        t = torch.linspace(0.0, 1.0, 5, dtype=F64, device=device)
        options = {} if METHODS[method].adaptive else {"step_size": 0.01}
        return odekit.solve(lambda s, y: y @ a.T, y0, t, method=method, rtol=1e-9, atol=1e-11, options=options).ys
    return build


def mlp_gradients(gradient: str) -> Callable[[torch.device], list[torch.Tensor]]:
    def build(device: torch.device) -> list[torch.Tensor]:
        net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double().to(device)
        y0 = torch.randn(8, 3, dtype=F64, device=device)
        t = torch.tensor([0.0, 1.0], dtype=F64, device=device)
        ys = odekit.solve(lambda s, y: net(y), y0, t, rtol=1e-11, atol=1e-12, gradient=gradient,
                          adjoint_params=tuple(net.parameters())).ys
        ys[-1].square().sum().backward()
        return [p.grad for p in net.parameters()]
    return build


def random_graph(device: torch.device, nodes: int = 60, edges: int = 240):
    """A random undirected graph with features and labels, drawn on the CPU, then moved."""
    edge_index = torch.randint(nodes, (2, edges))
    edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    return edge_index.to(device), torch.randn(nodes, 12, dtype=F64).to(device), torch.randint(3, (nodes,)).to(device)


def propagation(device: torch.device) -> list[torch.Tensor]:
    edge_index, x, _ = random_graph(device)
    adjacency = Adjacency(edge_index, x.shape[0])
    weights = torch.rand(adjacency.edge_index.shape[1], dtype=F64).to(device).requires_grad_()
    x = x.requires_grad_()
    out = _WeightedPropagation.apply(weights, x, adjacency)
    out.square().sum().backward()
    return [out, weights.grad, x.grad]


GRAND_VARIANTS = {
    "GRAND-l": {},
    "GRAND++-l (eq. 4.11)": {"source": True},
    "GRAND++-l (X(0) = x + C)": {"source": True, "initial_condition": "plus_source"},
    "GRAND-nl": {"nonlinear": True},
    "GRAND-l, edge sampling 0.7": {"edge_sampling": 0.7},
    "GRAND-l, columns, adjoint": {"attention_normalisation": "columns", "gradient": "adjoint"},
    "GRAND++-l, adjoint": {"source": True, "gradient": "adjoint"},
}


def grand(kw: dict) -> Callable[[torch.device], list[torch.Tensor]]:
    def build(device: torch.device) -> list[torch.Tensor]:
        edge_index, x, y = random_graph(device)
        model = GRAND(12, 3, hidden=8, t_end=2.0, attention_dim=8, heads=2, input_dropout=0.0, dropout=0.0,
                      rtol=1e-10, atol=1e-10, initial_term=True, **kw).double()
        with torch.no_grad():  # away from the near-uniform initial attention
            for layer in (model.field.attention.query, model.field.attention.key):
                layer.weight.normal_()
        model = model.to(device)
        model.set_source_nodes((torch.arange(x.shape[0]) < 9).to(device))
        logits = model(x, edge_index)
        F.cross_entropy(logits, y).backward()
        return [logits] + [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return build


def heavy_ball(kind: str) -> Callable[[torch.device], list[torch.Tensor]]:
    def build(device: torch.device) -> list[torch.Tensor]:
        model = pointcloud_model(kind, t_end=1.0, rtol=1e-10, atol=1e-10, gradient="adjoint").double().to(device)
        out = model(torch.randn(16, 2, dtype=F64).to(device))
        out.square().sum().backward()
        return [out] + [p.grad for p in model.parameters()]
    return build


def odenvp(settings: dict) -> Callable[[torch.device], list[torch.Tensor]]:
    """FFJORD's multiscale flow (exact trace, so no noise differs between devices): log p, its
    parameter gradients and samples."""
    def build(device: torch.device) -> list[torch.Tensor]:
        model = ODENVP((1, 4, 4), scales=2, blocks=2, hidden=(4,), trace="exact", train_t_end=True,
                       **settings).double().to(device)
        log_p = model(torch.rand(3, 1, 4, 4, dtype=F64).to(device) * 0.8 + 0.1)
        log_p.sum().backward()
        samples = model.sample(2, torch.Generator().manual_seed(0))
        return [log_p, samples] + [p.grad for p in model.parameters()]
    return build


def odeint_against_torchdiffeq(device: torch.device) -> float:
    a = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=F64, device=device)
    y0 = torch.randn(32, 2, dtype=F64).to(device)
    t = torch.linspace(0.0, 3.0, 7, dtype=F64, device=device)
    ours = odekit.odeint(lambda s, y: y @ a.T, y0, t, rtol=1e-10, atol=1e-12, method="dopri5")
    theirs = torchdiffeq.odeint(lambda s, y: y @ a.T, y0, t, rtol=1e-10, atol=1e-12, method="dopri5")
    return relative_error(ours, theirs)


def correctness(device: torch.device) -> list[dict]:
    # (check, tolerance): the device against the CPU must agree to rounding; the adjoint against
    # backprop and odekit against torchdiffeq differ by their solver tolerances
    checks: dict[str, tuple[Callable[[], float], float]] = {}
    for method in METHODS:
        checks[f"solve, {method}"] = (lambda m=method: on_both(linear_system(m), device), TOLERANCE)
    for gradient in ("backprop", "adjoint"):
        checks[f"MLP field gradients, {gradient}"] = (lambda g=gradient: on_both(mlp_gradients(g), device), TOLERANCE)
    checks["adjoint against backprop on the device"] = (
        lambda: relative_error(seeded(mlp_gradients("adjoint"), device), seeded(mlp_gradients("backprop"), device)),
        1e-6)
    checks["odekit.odeint against torchdiffeq.odeint on the device"] = (lambda: odeint_against_torchdiffeq(device),
                                                                        1e-6)
    checks["sparse A·X and its sampled weight gradient"] = (lambda: on_both(propagation, device), TOLERANCE)
    for name, kw in GRAND_VARIANTS.items():
        checks[name] = (lambda kw=kw: on_both(grand(kw), device), TOLERANCE)
    for kind in ("node", "anode", "sonode", "hbnode", "ghbnode"):
        checks[f"{kind} (point cloud), adjoint"] = (lambda k=kind: on_both(heavy_ball(k), device), TOLERANCE)
    proximal = {"method": "prox_bdf2", "options": {"step_size": 0.2, "inner": "fr", "inner_step": 0.3,
                                                   "inner_res_tol": 1e-12, "inner_max_iters": 2000}}
    for label, settings in (("dopri5, adjoint", {"rtol": 1e-9, "atol": 1e-9, "gradient": "adjoint"}),
                            ("prox BDF2, unrolled", {**proximal, "gradient": "backprop"}),
                            ("prox BDF2, implicit gradient", {**proximal, "gradient": "implicit"})):
        checks[f"ODENVP (FFJORD), {label}"] = (lambda s=settings: on_both(odenvp(s), device), TOLERANCE)
    rows = []
    for name, (check, tolerance) in checks.items():
        try:
            error, status = check(), ""
        except Exception as err:  # a failing piece is a result of the check, not the end of it
            error, status = float("nan"), f"{type(err).__name__}: {str(err)[:160]}"
        rows.append({"check": name, "relative_error": error, "tolerance": tolerance,
                     "ok": not status and error <= tolerance, "error": status})
    return rows


def timings(device: torch.device, datasets: list[str], epochs: int) -> list[dict]:
    rows = []
    for label, (dim, width, batch) in solver_overhead.CASES.items():
        torch.manual_seed(0)
        field = solver_overhead.MLPField(dim, width).to(device)
        y0 = torch.randn(batch, dim, device=device)
        t = torch.tensor([0.0, 1.0], device=device)
        runs = {
            "odekit": lambda: odekit.solve(field, y0, t, rtol=solver_overhead.RTOL, atol=solver_overhead.ATOL).ys,
            "torchdiffeq": lambda: torchdiffeq.odeint(field, y0, t, rtol=solver_overhead.RTOL,
                                                      atol=solver_overhead.ATOL),
        }
        seconds = {}
        with torch.no_grad():
            for name, run in runs.items():
                run()  # warm-up
                grand_epoch.synchronise(device)
                start = time.perf_counter()
                for _ in range(5):
                    run()
                grand_epoch.synchronise(device)
                seconds[name] = (time.perf_counter() - start) / 5
        rows.append({"case": f"forward solve, {label}", "odekit_s": seconds["odekit"],
                     "torchdiffeq_s": seconds["torchdiffeq"], "ratio": seconds["odekit"] / seconds["torchdiffeq"]})
    if datasets:
        from odekit.data import data_root
        from odekit.experiments.node_trainer import GraphCache

        cache = GraphCache(data_root(), float64=False)
        for name in datasets:
            r = grand_epoch.measure(name, cache.get(name), epochs, device)
            rows.append({"case": f"GRAND-l epoch, {name} ({r['gradient']})", "odekit_s": r["odekit"]["epoch_s"],
                         "torchdiffeq_s": r["torchdiffeq"]["epoch_s"], "ratio": r["ratio_epoch"],
                         "nfe": [r["odekit"]["nfe_forward"], r["torchdiffeq"]["nfe_forward"]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--datasets", default="cora,coauthor_cs",
                        help="graphs for the GRAND epoch timing, from the data root ('' to skip)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cuda_check.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu to test the script itself")
    warnings.simplefilter("ignore", UserWarning)  # PyG / sparse-format notices
    console = Console()
    console.print(f"[bold]correctness on {device}[/] (float64, against the CPU) …")
    checks = correctness(device)
    table = Table(title=f"odekit on {device} against the CPU")
    for column in ("check", "relative error", "tolerance", "ok"):
        table.add_column(column)
    for r in checks:
        table.add_row(r["check"], f"{r['relative_error']:.1e}" if not r["error"] else r["error"],
                      f"{r['tolerance']:.0e}", "yes" if r["ok"] else "[red]NO[/]")
    console.print(table)
    console.print(f"[bold]timing on {device}[/] (float32) …")
    datasets = [d for d in args.datasets.split(",") if d]
    times = timings(device, datasets, args.epochs)
    table = Table(title=f"odekit vs torchdiffeq on {device}")
    for column in ("case", "odekit s", "torchdiffeq s", "ratio"):
        table.add_column(column)
    for r in times:
        table.add_row(r["case"], f"{r['odekit_s']:.4f}", f"{r['torchdiffeq_s']:.4f}", f"{r['ratio']:.2f}")
    console.print(table)
    info = machine_info()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    write_json(args.out, {"benchmark": "cuda_check", "device": str(device), "machine": info,
                          "checks": checks, "timings": times})
    console.print(f"wrote {args.out}")
    failed = [r["check"] for r in checks if not r["ok"]]
    if failed:
        sys.exit(f"{len(failed)} check(s) disagree: {', '.join(failed)}")


if __name__ == "__main__":
    main()
