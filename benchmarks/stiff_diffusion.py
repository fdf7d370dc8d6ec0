"""Stiff diffusion: the cost of reaching final error ≤ 1e-5 on the 1-D heat equation (eq. 5.18).

For each grid size N, float64, t ∈ [0, 1], standard Gaussian initial state: every method walks a
list of settings from cheap to expensive (step sizes, or tolerances) and stops at the first whose
final error (max over the grid, against the FFT solution) is ≤ the target. It reports that
setting's NFE and wall time. Methods: odekit's proximal solvers (fixed-step backward Euler and
BDF2 with L-BFGS and Newton–Krylov inner solves, and the adaptive proximal BDF), odekit's
dopri5 and adaptive_heun, torchdiffeq's dopri5 and adaptive_heun, and scipy's BDF given the
exact Jacobian (the classical implicit reference: its cost is f-evaluations plus LU
factorisations). Explicit methods are stability-bound (NFE ∝ λ_max ∝ N²); a run past the NFE
cap is stopped and reported with the cost the N² law predicts from the smallest grid.

    python benchmarks/stiff_diffusion.py [--sizes 128 512 2048] [--nfe-cap 400000] [--out ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from scipy.integrate import solve_ivp

import odekit
from odekit.data.stiff_problems import HeatEquation
from odekit.experiments.timing import machine_info
from odekit.report.atomic import write_json

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - the peer is a test extra
    sys.exit("this benchmark compares against torchdiffeq: pip install torchdiffeq")

TARGET = 1e-5
STEPS = (0.25, 0.2, 0.1, 0.05, 0.02, 0.01)
TOLERANCES = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)


class CapReached(Exception):
    pass


def odekit_runner(method: str, options_for, rtol_for=None):
    def run(problem: HeatEquation, setting: float, cap: int):
        t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        kwargs = {"method": method, "options": {**options_for(setting), "max_nfe": cap}, "throw": False}
        if rtol_for is not None:
            kwargs["rtol"] = kwargs["atol"] = rtol_for(setting)
        with torch.no_grad():
            start = time.perf_counter()
            sol = odekit.solve(problem, problem.y0, t, **kwargs)
            wall = time.perf_counter() - start
        if sol.status == "max_steps_exceeded":
            raise CapReached
        return sol.ys[-1], sol.stats.nfe, wall, {k: v for k, v in sol.stats.extra.items() if k.startswith("inner")}
    return run


def torchdiffeq_runner(method: str):
    def run(problem: HeatEquation, tol: float, cap: int):
        calls = [0]

        def f(t, y):
            calls[0] += 1
            if calls[0] > cap:
                raise CapReached
            return problem(t, y)

        with torch.no_grad():
            start = time.perf_counter()
            ys = torchdiffeq.odeint(f, problem.y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method=method,
                                    rtol=tol, atol=tol)
            wall = time.perf_counter() - start
        return ys[-1], calls[0], wall, {}
    return run


def scipy_bdf(problem: HeatEquation, tol: float, cap: int):
    jacobian = problem.jacobian()

    def rhs(t, y):
        return jacobian @ y

    start = time.perf_counter()
    sol = solve_ivp(rhs, (0.0, 1.0), problem.y0.numpy(), method="BDF", jac=jacobian, rtol=tol, atol=tol)
    wall = time.perf_counter() - start
    return torch.from_numpy(sol.y[:, -1]), sol.nfev, wall, {"lu_factorisations": sol.nlu, "jacobians": sol.njev}


LBFGS = {"inner": "lbfgs", "inner_res_tol": 1e-8, "inner_max_iters": 20000}
NEWTON_KRYLOV = {"inner": "newton_krylov", "inner_res_tol": 1e-8, "inner_max_iters": 200, "krylov_dim": 300}
METHODS = {
    "odekit prox_be + lbfgs": (odekit_runner("prox_be", lambda h: {"step_size": h, **LBFGS}), STEPS, "h"),
    "odekit prox_bdf2 + lbfgs": (odekit_runner("prox_bdf2", lambda h: {"step_size": h, **LBFGS}), STEPS, "h"),
    "odekit prox_be + newton_krylov": (odekit_runner("prox_be", lambda h: {"step_size": h, **NEWTON_KRYLOV}), STEPS,
                                       "h"),
    "odekit prox_bdf (adaptive) + lbfgs": (odekit_runner("prox_bdf", lambda tol: {**LBFGS, "inner_res_tol": tol / 100},
                                                         lambda tol: tol), TOLERANCES, "rtol"),
    "odekit dopri5": (odekit_runner("dopri5", lambda tol: {}, lambda tol: tol), TOLERANCES, "rtol"),
    "odekit adaptive_heun": (odekit_runner("adaptive_heun", lambda tol: {}, lambda tol: tol), TOLERANCES, "rtol"),
    "torchdiffeq dopri5": (torchdiffeq_runner("dopri5"), TOLERANCES, "rtol"),
    "torchdiffeq adaptive_heun": (torchdiffeq_runner("adaptive_heun"), TOLERANCES, "rtol"),
    "scipy BDF (exact Jacobian)": (scipy_bdf, TOLERANCES, "rtol"),
}


def cheapest(run, settings, problem: HeatEquation, cap: int) -> dict:
    exact = problem.exact(1.0)
    tried = []
    for setting in settings:
        try:
            y, nfe, wall, extra = run(problem, setting, cap)
        except CapReached:
            return {"status": "nfe cap", "tried": tried}
        error = float((y - exact).abs().max())
        tried.append({"setting": setting, "error": error, "nfe": nfe, "wall_s": wall})
        if error <= TARGET:
            return {"status": "ok", "setting": setting, "error": error, "nfe": nfe, "wall_s": wall, "extra": extra,
                    "tried": tried}
    return {"status": "target not reached", "tried": tried}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--nfe-cap", type=int, default=400_000, help="stop explicit runs past this many evaluations")
    parser.add_argument("--only", nargs="*", help="substrings of method names to run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stiff_diffusion.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread for every library: a like-for-like comparison
    console = Console(width=170)
    methods = {k: v for k, v in METHODS.items() if not args.only or any(s in k for s in args.only)}
    results: dict[str, dict] = {}
    for n in args.sizes:
        problem = HeatEquation(n)
        results[str(n)] = {"lambda_max": problem.stiffness}
        for name, (run, settings, kind) in methods.items():
            console.print(f"N={n}: {name} …")
            outcome = cheapest(run, settings, problem, args.nfe_cap)
            outcome["setting_kind"] = kind
            results[str(n)][name] = outcome
    _predict_capped(results, args.sizes)
    _print(console, results, args.sizes, methods)
    smallest = str(min(args.sizes))
    summary = _target_check(results.get("128", results[smallest]))
    console.print(summary["text"])
    write_json(args.out, {"benchmark": "stiff_diffusion", "target_error": TARGET, "nfe_cap": args.nfe_cap,
                          "machine": machine_info(), "threads": 1, "results": results, "target": summary})
    console.print(f"wrote {args.out}")


def _predict_capped(results: dict, sizes: list[int]) -> None:
    """For runs stopped at the cap: the N² (λ_max) law applied to the smallest grid's measured cost."""
    base = str(min(sizes))
    for n in map(str, sizes):
        for name, outcome in results[n].items():
            if isinstance(outcome, dict) and outcome.get("status") == "nfe cap":
                measured = results[base].get(name, {})
                if measured.get("status") == "ok":
                    scale = results[n]["lambda_max"] / results[base]["lambda_max"]
                    outcome["predicted_nfe"] = int(measured["nfe"] * scale)
                    outcome["predicted_wall_s"] = measured["wall_s"] * scale * int(n) / int(base)


def _print(console, results, sizes, methods) -> None:
    table = Table(title=f"Heat equation, cheapest setting reaching final error ≤ {TARGET:g} (float64, 1 thread)")
    for col in ("N", "method", "setting", "final error", "NFE", "wall s", "notes"):
        table.add_column(col)
    for n in map(str, sizes):
        for name in methods:
            o = results[n][name]
            if o["status"] == "ok":
                notes = ", ".join(f"{k} {v}" for k, v in o.get("extra", {}).items()
                                  if k in ("inner_iterations", "inner_iterations_max", "lu_factorisations"))
                table.add_row(n, name, f"{o['setting_kind']}={o['setting']:g}", f"{o['error']:.1e}", str(o["nfe"]),
                              f"{o['wall_s']:.2f}", notes)
            else:
                predicted = (f"predicted ≈ {o['predicted_nfe']:,} NFE, {o['predicted_wall_s']:.0f} s"
                             if "predicted_nfe" in o else "")
                table.add_row(n, name, "-", "-", "-", "-", f"{o['status']} {predicted}")
    console.print(table)


def _target_check(at128: dict) -> dict:
    """The issue's target at N=128: best proximal ≤ 3000 NFE and ≤ 1/20 of torchdiffeq dopri5's wall time."""
    proximal = {k: v for k, v in at128.items() if k.startswith("odekit prox") and v.get("status") == "ok"}
    reference = at128.get("torchdiffeq dopri5", {})
    if not proximal or reference.get("status") != "ok":
        return {"text": "target check: missing runs", "met": None}
    best_name = min(proximal, key=lambda k: proximal[k]["wall_s"])
    best = proximal[best_name]
    fewest = min(v["nfe"] for v in proximal.values())
    ratio = best["wall_s"] / reference["wall_s"]
    met = fewest <= 3000 and ratio <= 1 / 20
    text = (f"N=128 target (≤ 3000 NFE and ≤ 1/20 of torchdiffeq dopri5's wall time): fewest proximal NFE {fewest}; "
            f"fastest proximal {best_name} {best['wall_s']:.2f} s vs torchdiffeq dopri5 {reference['wall_s']:.2f} s "
            f"= {ratio:.4f}× → {'MET' if met else 'MISSED'}")
    return {"text": text, "met": met, "fewest_proximal_nfe": fewest, "wall_ratio": ratio, "fastest": best_name}


if __name__ == "__main__":
    main()
