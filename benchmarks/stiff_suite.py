"""Stiff suite: odekit's stiff solvers and ``method="auto"`` against SciPy's BDF, Radau and LSODA.

Classical stiff problems (Robertson's kinetics, Van der Pol at μ = 1000, the Brusselator
reaction–diffusion system with 80 states, the periodic heat equation of eq. 5.18 at N = 128,
512, 2048 from a Gaussian random state) and one non-stiff control (Lotka–Volterra), all in
float64 at rtol = 1e-5, atol = 1e-8, one thread. For every solver: the final error (max over
components, against SciPy's Radau at rtol 1e-12 / atol 1e-14, or the exact solution of the heat
equation), the evaluations of ``f`` (every call counted, finite-difference Jacobian columns
included; columns of an autograd Jacobian are added), Jacobians, LU factorisations, and the
best wall time of ``--repeats`` runs. diffrax's Kvaerno5 joins when ``jax`` and ``diffrax``
are installed. SciPy gets NumPy right-hand sides (its natural use), odekit torch ones.

Targets (issue 16): on every problem ``auto`` within 10× of SciPy BDF's error with ≤ 2× its
evaluations and ≤ 5× its wall time; faster than BDF on the heat equation at N = 2048; on the
non-stiff problem ``auto`` ≤ 1.2× dopri5's evaluations.

    python benchmarks/stiff_suite.py [--repeats 3] [--sizes 128 512 2048] [--out ...]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.integrate import solve_ivp

import odekit
from odekit.data.stiff_problems import CLASSICAL_PROBLEMS, HeatEquation
from odekit.experiments.timing import machine_info
from odekit.report.atomic import write_json

RTOL, ATOL = 1e-5, 1e-8
NFE_CAP = 200_000  # explicit and proximal solvers stop here on the stiff problems


@dataclass
class Problem:
    name: str
    f: object  # torch right-hand side
    f_numpy: object
    y0: torch.Tensor
    t_end: float
    reference: np.ndarray
    stiff: bool
    jacobian: object = None  # exact Jacobian for SciPy (heat equation), else None


def classical(name: str) -> Problem:
    p = CLASSICAL_PROBLEMS[name]
    ref = solve_ivp(p.numpy, (0.0, p.t_end), p.initial(), method="Radau", rtol=1e-12, atol=1e-14)
    return Problem(name, p, p.numpy, p.y0, p.t_end, ref.y[:, -1], p.stiff)


def heat(n: int) -> Problem:
    p = HeatEquation(n)
    jac = p.jacobian()

    def f_numpy(t, y):
        return (np.roll(y, 1) + np.roll(y, -1) - 2 * y) * p.inv_dx2

    return Problem(f"heat_{n}", p, f_numpy, p.y0, 1.0, p.exact(1.0).numpy(), True, jac)


def counted(f):
    calls = [0]

    def wrapped(t, y):
        calls[0] += 1
        return f(t, y)

    return wrapped, calls


def run_odekit(problem: Problem, method: str) -> dict:
    f, calls = counted(problem.f)
    t = torch.tensor([0.0, problem.t_end], dtype=torch.float64)
    with torch.no_grad():
        start = time.perf_counter()
        sol = odekit.solve(f, problem.y0, t, method=method, rtol=RTOL, atol=ATOL, throw=False,
                           options={"max_nfe": NFE_CAP})
        wall = time.perf_counter() - start
    extra = sol.stats.extra
    return {"status": str(sol.status), "y": sol.ys[-1].numpy(), "wall": wall,
            "evaluations": calls[0] + int(extra.get("autograd_jacobian_columns", 0)),
            "jacobians": int(extra.get("jacobians", 0)), "lu": int(extra.get("lu_factorizations", 0)),
            "steps": sol.stats.steps_accepted, "switches": [(round(t, 6), m) for t, m in sol.stats.switches]}


def run_scipy(problem: Problem, method: str, exact_jacobian: bool = False) -> dict:
    f, calls = counted(problem.f_numpy)
    kwargs = {"jac": problem.jacobian} if exact_jacobian else {}
    start = time.perf_counter()
    res = solve_ivp(f, (0.0, problem.t_end), problem.y0.numpy(), method=method, rtol=RTOL, atol=ATOL, **kwargs)
    wall = time.perf_counter() - start
    # Exact Jacobians are not evaluations of f; LSODA's Fortran differences are calls, counted.
    return {"status": "success" if res.success else res.message, "y": res.y[:, -1], "wall": wall,
            "evaluations": calls[0], "jacobians": int(res.njev), "lu": int(res.nlu), "steps": int(res.t.size - 1),
            "switches": []}


def run_diffrax(problem: Problem) -> dict | None:
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    if problem.name.startswith("heat"):
        inv = float(problem.f.inv_dx2)

        def vf(t, y, args):
            return (jnp.roll(y, 1) + jnp.roll(y, -1) - 2 * y) * inv
    else:
        def vf(t, y, args):
            return CLASSICAL_PROBLEMS[problem.name]._rhs(y, jnp)
    term = diffrax.ODETerm(vf)
    solver = diffrax.Kvaerno5()
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    @jax.jit
    def solve(y0):
        return diffrax.diffeqsolve(term, solver, 0.0, problem.t_end, None, y0, stepsize_controller=controller,
                                   max_steps=100_000, throw=False)

    y0 = jnp.asarray(problem.y0.numpy())
    solve(y0).ys.block_until_ready()  # compile
    start = time.perf_counter()
    sol = solve(y0)
    sol.ys.block_until_ready()
    wall = time.perf_counter() - start
    return {"status": "success" if int(sol.result._value) == 0 else str(sol.result), "y": np.asarray(sol.ys[-1]),
            # diffrax counts steps, not evaluations of f: -1 marks "not reported".
            "wall": wall, "evaluations": -1, "jacobians": -1, "lu": -1,
            "steps": int(sol.stats["num_accepted_steps"]), "switches": []}


def best_of(run, repeats: int) -> dict:
    results = [run() for _ in range(repeats)]
    best = min(results, key=lambda r: r["wall"])
    return best


def _jsonable(result: dict, reference: np.ndarray) -> dict:
    out = {k: v for k, v in result.items() if k != "y"}
    y = result["y"]
    out["error"] = float(np.abs(y - reference).max()) if np.all(np.isfinite(y)) else math.inf
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stiff_suite.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    problems = [classical(name) for name in CLASSICAL_PROBLEMS] + [heat(n) for n in args.sizes]
    results: dict[str, dict[str, dict]] = {}
    for problem in problems:
        solvers = {
            "odekit auto": lambda p=problem: run_odekit(p, "auto"),
            "odekit ndf": lambda p=problem: run_odekit(p, "ndf"),
            "odekit bdf": lambda p=problem: run_odekit(p, "bdf"),
            "odekit dopri5": lambda p=problem: run_odekit(p, "dopri5"),
            "scipy BDF": lambda p=problem: run_scipy(p, "BDF"),
            "scipy Radau": lambda p=problem: run_scipy(p, "Radau"),
            "scipy LSODA": lambda p=problem: run_scipy(p, "LSODA"),
        }
        if problem.jacobian is not None:
            solvers["scipy BDF (exact J)"] = lambda p=problem: run_scipy(p, "BDF", exact_jacobian=True)
        row = {}
        for label, run in solvers.items():
            repeats = 1 if label == "odekit dopri5" and problem.stiff else args.repeats
            run()  # warm-up (first-call costs of torch and of the Jacobian path)
            row[label] = _jsonable(best_of(run, repeats), problem.reference)
            console.print(f"{problem.name:>14} {label:<22} {row[label]['status']:<22} "
                          f"err {row[label]['error']:.2e}  evals {row[label]['evaluations']:>7}  "
                          f"wall {row[label]['wall']:.3f}s")
        kvaerno = run_diffrax(problem)
        if kvaerno is not None:
            row["diffrax Kvaerno5"] = _jsonable(kvaerno, problem.reference)
        results[problem.name] = row
    checks = _targets(results, problems)
    _print(console, results, checks)
    write_json(args.out, {"benchmark": "stiff_suite", "rtol": RTOL, "atol": ATOL, "machine": machine_info(),
                          "results": results, "targets": checks})
    console.print(f"wrote {args.out}")


def _targets(results: dict, problems: list[Problem]) -> dict:
    checks = {}
    for problem in problems:
        row = results[problem.name]
        auto = row["odekit auto"]
        if problem.stiff:
            bdf = row["scipy BDF"]
            check = {
                "error_ratio": auto["error"] / bdf["error"] if bdf["error"] else math.inf,
                "evaluations_ratio": auto["evaluations"] / bdf["evaluations"],
                "wall_ratio": auto["wall"] / bdf["wall"],
            }
            check["met"] = (check["error_ratio"] <= 10 and check["evaluations_ratio"] <= 2
                            and check["wall_ratio"] <= (1.0 if problem.name == "heat_2048" else 5.0))
        else:
            ratio = auto["evaluations"] / row["odekit dopri5"]["evaluations"]
            check = {"evaluations_vs_dopri5": ratio, "met": ratio <= 1.2}
        checks[problem.name] = check
    return checks


def _print(console: Console, results: dict, checks: dict) -> None:
    table = Table(title=f"stiff suite, rtol={RTOL:g}, atol={ATOL:g}, float64, 1 thread")
    for col in ("problem", "solver", "status", "error", "f evals", "J", "LU", "steps", "wall s"):
        table.add_column(col, justify="right" if col not in ("problem", "solver", "status") else "left")
    for name, row in results.items():
        for label, r in row.items():
            table.add_row(name, label, r["status"][:24], f"{r['error']:.2e}", str(r["evaluations"]),
                          str(r["jacobians"]), str(r["lu"]), str(r["steps"]), f"{r['wall']:.3f}")
    console.print(table)
    for name, check in checks.items():
        console.print(f"{name}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in check.items()))


if __name__ == "__main__":
    main()
