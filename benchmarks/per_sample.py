"""Per-sample stepping: batched f calls of odekit per_sample=True, a batch-coupled solve, and torchode.

A batch of 16 Van der Pol oscillators (μ = 10) started at 16 points spread along the limit cycle
(so each is in a different phase: some in a slow stretch, some in a fast jump), dopri5 at
rtol 1e-7 / atol 1e-9, float64, t ∈ [0, 10] with 5 output times, one thread. Reports the
batched calls of ``f`` (each call evaluates all 16 samples), the wall time (median of
``--repeats``), and the largest difference between each sample of the per-sample solve and a
solve of that sample alone (the issue's "equal to solving that sample alone" target, 1e-10).
torchode (optional peer, per-sample stepping with its own dopri5 and integral controller) joins
when installed.

Targets (issue 15): per-sample f calls ≤ 0.5× the batch-coupled solve's and ≤ torchode's. The
per-sample solve also runs with ``compile=True`` (its compile time reported apart).

Part ``hybrid``: where per-sample stepping is meant to pay, the ODE-RNN hybrids, whose windows have
irregular gaps. One HBNODE-RNN of the plane-vibration experiment (its sizes and settings: dopri5,
tolerance 1e-7, weights scaled by 0.01, adjoint) on one batch of 64 real windows (``$ODEKIT_DATA``/f16_gvt), forward and
backward of its training loss, batch-coupled (every window on [0, 1] with its field scaled by its
gap) against ``per_sample=True`` (every window on its own [0, Δt]) from the same weights: batched
NFE forward and backward, wall time, and the largest difference of the predictions.

Part ``stiff``: the methods off the tensor loop, which run each sample's own solve in lockstep
(``odekit.solve.lockstep``). 16 relaxations ``dy/dt = −λ_b (y − cos t)`` (2 components each) with
stiffness ``λ_b`` log-spaced over 1 … 10⁴, t ∈ [0, 5], rtol 1e-6 / atol 1e-8, float64: proximal BDF
(adaptive, Newton–Krylov and Fletcher–Reeves inner solvers) and NDF, per sample against
batch-coupled: batched f calls, steps, inner iterations, wall time and the largest difference
from each sample solved alone. Coupled, the stiffest sample sets every sample's step.

    python benchmarks/per_sample.py [--part vdp|hybrid|stiff|all] [--repeats 5]
        [--out benchmarks/results/per_sample.json]

A single part updates its entry in the JSON and keeps the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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


def van_der_pol_part(repeats: int) -> dict:
    y0 = phases()
    t = torch.linspace(0.0, 10.0, 5, dtype=torch.float64)
    results: dict[str, dict] = {}

    def odekit_run(per_sample: bool, compile: bool = False):
        # A counting field would make the compiled step recompile (it changes Python state): the
        # engine's own count is the same number.
        with torch.no_grad():
            sol = odekit.solve(van_der_pol, y0, t, method="dopri5", rtol=RTOL, atol=ATOL, per_sample=per_sample,
                               compile=compile)
        return sol.stats.nfe, sol

    wall, (calls, sol) = timed(lambda: odekit_run(True), repeats)
    difference = max(float((odekit.solve(van_der_pol, y0[b], t, rtol=RTOL, atol=ATOL).ys - sol.ys[:, b]).abs().max())
                     for b in range(BATCH))
    results["odekit per_sample"] = {"f_calls": calls, "wall_s": wall, "max_difference_vs_alone": difference,
                                    "steps_per_sample": sol.stats.per_sample["steps_accepted"].tolist()}
    start = time.perf_counter()
    first_call, _ = timed(lambda: odekit_run(True, compile=True), 1)
    wall, (_, compiled) = timed(lambda: odekit_run(True, compile=True), repeats)
    results["odekit per_sample, compile=True"] = {
        "f_calls": compiled.stats.nfe, "wall_s": wall, "compile_s": first_call - wall,
        "max_difference_vs_eager": float((compiled.ys - sol.ys).abs().max()), "setup_s": time.perf_counter() - start}
    wall, (calls, _) = timed(lambda: odekit_run(False), repeats)
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

        wall, (calls, tsol) = timed(torchode_run, repeats)
        results["torchode"] = {"f_calls": calls, "wall_s": wall,
                               "max_difference_vs_odekit": float((tsol.ys.transpose(0, 1) - sol.ys).abs().max())}
    results.update(diffrax_per_sample(y0, t, repeats, sol.ys))
    coupled = results["odekit batch-coupled"]["f_calls"]
    ours = results["odekit per_sample"]["f_calls"]
    targets = {"f_calls_vs_coupled": ours / coupled, "met_vs_coupled": ours <= 0.5 * coupled,
               "max_difference_vs_alone": results["odekit per_sample"]["max_difference_vs_alone"]}
    if "torchode" in results:
        targets["f_calls_vs_torchode"] = ours / results["torchode"]["f_calls"]
        targets["met_vs_torchode"] = ours <= results["torchode"]["f_calls"]
    table = Table(title=f"{BATCH} Van der Pol oscillators (μ = {MU:g}) in different phases, dopri5, rtol {RTOL:g}")
    for col in ("solver", "batched f calls", "wall s (median)"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, "–" if r["f_calls"] is None else str(r["f_calls"]), f"{r['wall_s']:.4f}")
    Console().print(table)
    Console().print(targets)
    return {"results": results, "targets": targets}


def diffrax_per_sample(y0: torch.Tensor, t: torch.Tensor, repeats: int, reference: torch.Tensor) -> dict:
    """diffrax's per-sample stepping (``jax.vmap`` of ``diffeqsolve``: each sample its own step
    size inside one compiled loop), jit-compiled, float64, if installed."""
    try:
        import jax
    except ImportError:
        return {}
    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp

    def vf(t, y, args):
        return jnp.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])

    term, ts = diffrax.ODETerm(vf), jnp.asarray(t.numpy())
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    def one(y):
        sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), ts[0], ts[-1], None, y, saveat=diffrax.SaveAt(ts=ts),
                                  stepsize_controller=controller, max_steps=100_000)
        return sol.ys, sol.stats["num_steps"]

    solve = jax.jit(jax.vmap(one))
    y = jnp.asarray(y0.numpy())
    first, _ = timed(lambda: jax.block_until_ready(solve(y)), 1)
    wall, (ys, steps) = timed(lambda: jax.block_until_ready(solve(y)), repeats)
    difference = float(jnp.max(jnp.abs(jnp.swapaxes(ys, 0, 1) - jnp.asarray(reference.numpy()))))
    # vmap runs the loop until the last sample is done: batched evaluations = the hardest sample's.
    return {"diffrax vmap (jit)": {"f_calls": None, "wall_s": wall, "compile_s": first - wall,
                                   "steps_hardest_sample": int(steps.max()), "max_difference_vs_odekit": difference}}


def hybrid_part(repeats: int) -> dict:
    from odekit.data.root import data_root
    from odekit.experiments.hybrid_training import build_model, hybrid_loss, load_splits, plan_of
    from odekit.experiments.plane_vibration import TASK, PlaneVibrationConfig

    config = PlaneVibrationConfig(models=("hbnode",))  # the full profile: tolerance 1e-7, weights × 0.01
    train, _ = load_splits(TASK, config, data_root(None))
    batch = train.subset(slice(0, config.batch_size))
    plan = plan_of(TASK, config)
    rows: dict[str, dict] = {}
    outputs = {}
    for per_sample in (False, True):
        model = build_model(TASK, "hbnode", dataclasses.replace(config, per_sample=per_sample))

        def step(model=model):
            model.zero_grad()
            hybrid_loss(model, batch, plan)[0].backward()
            return model.stats

        wall, stats = timed(step, repeats)
        with torch.no_grad():
            outputs[per_sample] = model(batch.x, batch.dt)
        rows["per_sample" if per_sample else "batch-coupled"] = {
            "wall_s": wall, "nfe_forward": stats.nfe, "nfe_backward": stats.nfe_backward}
    rows["per_sample"]["max_prediction_difference"] = float((outputs[True] - outputs[False]).abs().max())
    table = Table(title=f"HBNODE-RNN, plane vibration, one batch of {config.batch_size} windows, forward + backward")
    for col in ("solve", "batched NFE fwd", "batched NFE bwd", "wall s (median)"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, str(r["nfe_forward"]), str(r["nfe_backward"]), f"{r['wall_s']:.3f}")
    Console().print(table)
    ratios = {key: rows["per_sample"][key] / rows["batch-coupled"][key] for key in ("nfe_forward", "nfe_backward",
                                                                                   "wall_s")}
    Console().print({"per_sample / batch-coupled": ratios,
                     "max_prediction_difference": rows["per_sample"]["max_prediction_difference"]})
    return {"results": rows, "ratios": ratios}


STIFF_CASES = {
    "prox_bdf, Newton–Krylov": {"method": "prox_bdf", "options": {"inner": "newton_krylov"}},
    "prox_bdf, Fletcher–Reeves (η = 0.3)": {"method": "prox_bdf", "options": {"inner": "fr", "inner_step": 0.3}},
    "ndf": {"method": "ndf"},
}


def stiff_part(repeats: int) -> dict:
    rates = torch.logspace(0.0, 4.0, BATCH, dtype=torch.float64)
    y0 = torch.stack([torch.linspace(-1.0, 2.0, BATCH, dtype=torch.float64),
                      torch.ones(BATCH, dtype=torch.float64)], dim=1)
    t = torch.linspace(0.0, 5.0, 5, dtype=torch.float64)

    def relaxation(t, y, rate):
        return -rate[..., None] * (y - torch.cos(t)[..., None])

    rows: dict[str, dict] = {}
    table = Table(title=f"{BATCH} relaxations, stiffness 1 … 1e4, rtol 1e-6: per sample (lockstep) vs batch-coupled")
    for col in ("method", "solve", "batched f calls", "steps (all samples)", "inner iterations", "wall s (median)"):
        table.add_column(col)
    for name, case in STIFF_CASES.items():
        settings = {"rtol": 1e-6, "atol": 1e-8, **case}
        for per_sample in (False, True):
            def run(per_sample=per_sample, settings=settings):
                with torch.no_grad():
                    return odekit.solve(relaxation, y0, t, args=rates, per_sample=per_sample, **settings)

            wall, sol = timed(run, repeats)
            steps = sol.stats.steps_accepted + sol.stats.steps_rejected
            row = {"f_calls": sol.stats.nfe, "steps": steps if per_sample else BATCH * steps, "wall_s": wall,
                   "inner_iterations": sol.stats.extra.get("inner_iterations")}
            if per_sample:
                row["max_difference_vs_alone"] = max(
                    float((odekit.solve(relaxation, y0[b], t, args=rates[b], **settings).ys - sol.ys[:, b]).abs().max())
                    for b in range(BATCH))
            rows[f"{name}, {'per sample' if per_sample else 'batch-coupled'}"] = row
            table.add_row(name, "per sample" if per_sample else "batch-coupled", str(row["f_calls"]),
                          str(row["steps"]), "–" if row["inner_iterations"] is None else str(row["inner_iterations"]),
                          f"{wall:.3f}")
    Console().print(table)
    ratios = {name: {key: rows[f"{name}, per sample"][key] / rows[f"{name}, batch-coupled"][key]
                     for key in ("f_calls", "wall_s")} for name in STIFF_CASES}
    Console().print({"per sample / batch-coupled": ratios})
    return {"results": rows, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("vdp", "hybrid", "stiff", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "per_sample.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts = {"vdp": van_der_pol_part, "hybrid": hybrid_part, "stiff": stiff_part}
    chosen = parts if args.part == "all" else {args.part: parts[args.part]}
    out = json.loads(args.out.read_text()) if args.out.exists() and args.part != "all" else {}
    out.update({"benchmark": "per_sample", "rtol": RTOL, "atol": ATOL, "machine": machine_info()})
    out.update({name: run(args.repeats) for name, run in chosen.items()})
    write_json(args.out, out)
    Console().print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
