"""Per-sample stepping: batched f calls of odekit per_sample=True, a batch-coupled solve, and torchode.

A batch of 16 Van der Pol oscillators (μ = 10) started at 16 points spread along the limit cycle
(so each is in a different phase: some in a slow stretch, some in a fast jump), dopri5 at
rtol 1e-7 / atol 1e-9, float64, t ∈ [0, 10] with 5 output times, one thread. Reports the
batched calls of ``f`` (each call evaluates all 16 samples), the wall time (median of
``--repeats``), and the largest difference between each sample of the per-sample solve and a
solve of that sample alone (the issue's "equal to solving that sample alone" target, 1e-10).
torchode (optional peer, per-sample stepping with its own dopri5 and integral controller) joins
when installed.

Targets (issue 15): per-sample f calls ≤ 0.5× the batch-coupled solve's and ≤ torchode's.

    python benchmarks/per_sample.py [--repeats 5] [--out benchmarks/results/per_sample.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import odekit
from odekit.experiments.timing import machine_info
from odekit.report.atomic import write_json

MU, RTOL, ATOL, BATCH = 10.0, 1e-7, 1e-9, 16


def van_der_pol(t, y):
    return torch.stack([y[..., 1], MU * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


class Counted:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, t, y):
        self.calls += 1
        return self.f(t, y)


def phases() -> torch.Tensor:
    cycle = odekit.solve(van_der_pol, torch.tensor([2.0, 0.0], dtype=torch.float64),
                         torch.linspace(0.0, 19.0, BATCH + 1, dtype=torch.float64)[1:], rtol=1e-10, atol=1e-12)
    return cycle.ys.clone()


def timed(run, repeats: int) -> tuple[float, object]:
    walls, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "per_sample.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    y0 = phases()
    t = torch.linspace(0.0, 10.0, 5, dtype=torch.float64)
    results: dict[str, dict] = {}

    def odekit_run(per_sample: bool):
        f = Counted(van_der_pol)
        with torch.no_grad():
            sol = odekit.solve(f, y0, t, method="dopri5", rtol=RTOL, atol=ATOL, per_sample=per_sample)
        return f.calls, sol

    wall, (calls, sol) = timed(lambda: odekit_run(True), args.repeats)
    difference = max(float((odekit.solve(van_der_pol, y0[b], t, rtol=RTOL, atol=ATOL).ys - sol.ys[:, b]).abs().max())
                     for b in range(BATCH))
    results["odekit per_sample"] = {"f_calls": calls, "wall_s": wall, "max_difference_vs_alone": difference,
                                    "steps_per_sample": sol.stats.per_sample["steps_accepted"].tolist()}
    wall, (calls, _) = timed(lambda: odekit_run(False), args.repeats)
    results["odekit batch-coupled"] = {"f_calls": calls, "wall_s": wall}
    try:
        import torchode as to
    except ImportError:
        to = None
    if to is not None:
        def torchode_run():
            f = Counted(van_der_pol)
            term = to.ODETerm(f)
            solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=ATOL, rtol=RTOL, term=term))
            with torch.no_grad():
                sol = solver.solve(to.InitialValueProblem(y0=y0, t_eval=t.expand(BATCH, -1)))
            return f.calls, sol

        wall, (calls, tsol) = timed(torchode_run, args.repeats)
        results["torchode"] = {"f_calls": calls, "wall_s": wall,
                               "max_difference_vs_odekit": float((tsol.ys.transpose(0, 1) - sol.ys).abs().max())}
    coupled = results["odekit batch-coupled"]["f_calls"]
    ours = results["odekit per_sample"]["f_calls"]
    targets = {"f_calls_vs_coupled": ours / coupled, "met_vs_coupled": ours <= 0.5 * coupled,
               "max_difference_vs_alone": results["odekit per_sample"]["max_difference_vs_alone"]}
    if "torchode" in results:
        targets["f_calls_vs_torchode"] = ours / results["torchode"]["f_calls"]
        targets["met_vs_torchode"] = ours <= results["torchode"]["f_calls"]
    console = Console()
    table = Table(title=f"{BATCH} Van der Pol oscillators (μ = {MU:g}) in different phases, dopri5, rtol {RTOL:g}")
    for col in ("solver", "batched f calls", "wall s (median)"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, str(r["f_calls"]), f"{r['wall_s']:.3f}")
    console.print(table)
    console.print(targets)
    write_json(args.out, {"benchmark": "per_sample", "rtol": RTOL, "atol": ATOL, "machine": machine_info(),
                          "results": results, "targets": targets})
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
