"""Proximal solvers in training: a 2-D FFJORD flow trained with dopri5 and with proximal BDF2–4, in one run.

The flow (``odekit.models.cnf``: concat-MLP 2 → 64 → 64 → 64 → 2, softplus, Hutchinson trace with
Rademacher noise, T = 1) learns the eight-Gaussian density (batch 256, Adam 1e-3). Solvers, as
thesis §5.4.2 sets them: dopri5 at atol 1e-5 / rtol 1e-7 with the adjoint (FFJORD's), and proximal
BDF2, BDF3, BDF4 at step 0.2 with Fletcher–Reeves inner solves (inner step 0.3, stopped at
‖z_{i+1} − z_i‖ ≤ 2e-3), differentiated by backprop through the inner iterations ("unrolled")
and by ``gradient="implicit"``. Per training iteration: forward and backward NFE, wall time and
the bytes autograd saves for the backward pass; after the budget: the test negative
log-likelihood (the density's entropy is the floor). A second part compares, at fixed weights,
each gradient with the gradient of the converged scheme (float64, dense Newton inner solves,
backpropagated): relative error and saved bytes, at the thesis's loose inner rule and at converged
inner solves.

Targets (issue 17): BDF2–4 reach dopri5's loss with ≤ 0.5× its NFE and less wall time;
``gradient="implicit"`` uses less memory than the unrolled backprop at 1e-4 relative gradient error.
Not here yet: the MNIST subset and GRAND-nl on Coauthor CS.

    python benchmarks/proximal_training.py [--iterations 100] [--out benchmarks/results/proximal_training.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from odekit.data.toy_densities import toy_density
from odekit.experiments.timing import machine_info
from odekit.models.cnf import CNF, ConcatMLP, standard_normal_log_prob
from odekit.report.atomic import write_json

FR = {"inner": "fr", "inner_step": 0.3, "inner_tol": 2e-3, "inner_res_tol": 0.0, "inner_max_iters": 500}
SOLVERS = {
    "dopri5 (adjoint)": {"method": "dopri5", "rtol": 1e-7, "atol": 1e-5, "gradient": "adjoint"},
    **{f"prox BDF{k} (unrolled)": {"method": f"prox_bdf{k}", "options": {"step_size": 0.2, **FR},
                                    "gradient": "backprop"} for k in (2, 3, 4)},
    **{f"prox BDF{k} (implicit)": {"method": f"prox_bdf{k}", "options": {"step_size": 0.2, **FR},
                                    "gradient": "implicit"} for k in (2, 3, 4)},
}


def saved_bytes(run):
    """Run ``run()`` and count the bytes autograd saves for its backward pass."""
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return result, sum(sizes)


def nll(flow: CNF, x: torch.Tensor) -> torch.Tensor:
    out = flow(x)
    return -(standard_normal_log_prob(out.z) + out.log_det).mean()


def train(settings: dict, args, train_x, test_x) -> dict:
    torch.manual_seed(0)
    flow = CNF(ConcatMLP(2, (64, 64, 64)), **settings)
    optimiser = torch.optim.Adam(flow.parameters(), lr=1e-3)
    records = []
    for i in range(args.iterations):
        batch = train_x[torch.randint(0, len(train_x), (args.batch,))]
        optimiser.zero_grad()
        start = time.perf_counter()
        loss, memory = saved_bytes(lambda batch=batch: nll(flow, batch))
        forward = flow.stats.nfe
        loss.backward()
        optimiser.step()
        records.append({"loss": loss.item(), "nfe_forward": forward, "nfe_backward": flow.stats.nfe_backward,
                        "seconds": time.perf_counter() - start, "saved_bytes": memory})
    with torch.no_grad():
        test = nll(flow, test_x).item()
    mean = {k: sum(r[k] for r in records) / len(records) for k in records[0]}
    return {"test_nll": test, "final_train_loss": sum(r["loss"] for r in records[-10:]) / 10, **mean,
            "curve": [r["loss"] for r in records]}


def gradient_errors(test_x) -> dict:
    """At fixed (initial) weights, in float64 on 16 test points: each gradient against the converged
    scheme's (dense Newton inner solves to 1e-12, backpropagated), with the bytes autograd saves.

    Rows: the thesis's loose inner rule (FR stopped at a step of 2e-3) unrolled and implicit, and FR run
    to a residual of 1e-9, unrolled and implicit: equal accuracy, where the memory differs.
    """
    converged_fr = {**FR, "inner_tol": 0.0, "inner_res_tol": 1e-9, "inner_max_iters": 20000}
    variants = (("reference", "backprop", {"inner": "newton", "inner_tol": 0.0, "inner_res_tol": 1e-12,
                                           "inner_max_iters": 50}),
                ("unrolled, FR step ≤ 2e-3", "backprop", FR), ("implicit, FR step ≤ 2e-3", "implicit", FR),
                ("unrolled, FR to 1e-9", "backprop", converged_fr), ("implicit, FR to 1e-9", "implicit", converged_fr))
    results = {}
    for k in (2, 3, 4):
        grads = {}
        for label, gradient, options in variants:
            torch.manual_seed(0)
            flow = CNF(ConcatMLP(2, (64, 64, 64)).double(), method=f"prox_bdf{k}",
                       options={"step_size": 0.2, **options}, gradient=gradient)
            torch.manual_seed(1)  # the same Hutchinson noise for every variant
            loss, memory = saved_bytes(lambda flow=flow: nll(flow, test_x[:16].double()))
            loss.backward()
            grads[label] = (torch.cat([p.grad.flatten() for p in flow.parameters()]), memory,
                            flow.stats.extra.get("inner_iterations", 0))
        reference = grads.pop("reference")[0]
        results[f"prox BDF{k}"] = {label: {"relative_error": float((g - reference).norm() / reference.norm()),
                                           "saved_bytes": memory, "inner_iterations": iterations}
                                   for label, (g, memory, iterations) in grads.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--skip-training", action="store_true", help="only the gradient comparison")
    parser.add_argument("--out", default="benchmarks/results/proximal_training.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    density = toy_density("eight_gaussians")
    generator = torch.Generator().manual_seed(0)
    train_x, test_x = density.sample(4096, generator).float(), density.sample(1024, generator).float()
    entropy = -density.log_prob(test_x.double()).mean().item()
    runs = {}
    for name, settings in ({} if args.skip_training else SOLVERS).items():
        runs[name] = train(settings, args, train_x, test_x)
        r = runs[name]
        console.print(f"{name}: test NLL {r['test_nll']:.3f} (entropy {entropy:.3f}), NFE {r['nfe_forward']:.0f}/"
                      f"{r['nfe_backward']:.0f}, {r['seconds'] * 1e3:.0f} ms/iteration, {r['saved_bytes'] / 1e6:.1f} MB")
    base = runs.get("dopri5 (adjoint)")
    table = Table(title=f"2-D FFJORD, {args.iterations} iterations, batch {args.batch} (entropy {entropy:.3f})")
    for column in ("solver", "test NLL", "forward NFE", "backward NFE", "NFE / dopri5", "wall / dopri5",
                   "saved MB"):
        table.add_column(column)
    for name, r in runs.items():  # (empty with --skip-training)
        total = (r["nfe_forward"] + r["nfe_backward"]) / (base["nfe_forward"] + base["nfe_backward"])
        table.add_row(name, f"{r['test_nll']:.3f}", f"{r['nfe_forward']:.0f}", f"{r['nfe_backward']:.0f}",
                      f"{total:.2f}", f"{r['seconds'] / base['seconds']:.2f}", f"{r['saved_bytes'] / 1e6:.1f}")
    console.print(table)
    errors = gradient_errors(test_x)
    grad_table = Table(title="gradient against the converged scheme's (float64, 16 points, initial weights)")
    for column in ("scheme", "gradient", "relative error", "saved MB", "inner iterations"):
        grad_table.add_column(column)
    for scheme, per in errors.items():
        for label, e in per.items():
            grad_table.add_row(scheme, label, f"{e['relative_error']:.2e}", f"{e['saved_bytes'] / 1e6:.2f}",
                               str(e["inner_iterations"]))
    console.print(grad_table)
    write_json(Path(args.out), {"machine": machine_info(), "settings": vars(args), "entropy": entropy,
                                "training": runs, "gradients": errors})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
