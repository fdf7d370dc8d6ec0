"""``diffusion1d``: proximal solvers on the stiff 1-D heat equation (eq. 5.18; Figs 5.3–5.5, Table 5.2).

Three parts, each a grid of cells (:func:`~odekit.experiments.grid.run_grid`) in its own checkpoint
section:

* **work–precision (Fig 5.3, Table 5.2)**: final error at ``t_end`` against NFE for the proximal
  schemes (BE, CN, BDF2–4) over step sizes and inner solvers, for odekit's adaptive proximal BDF,
  and for the explicit adaptive solvers (whose steps are bound by stability, so their cost barely
  moves with the tolerance). The thesis's Table 5.2 setting is the step ``1/2000`` with
  Fletcher–Reeves at inner step 0.1, stopped at ‖z_{i+1} − z_i‖ ≤ 5e-9.
* **inner convergence (Fig 5.4)**: one proximal backward Euler step solved by each inner solver;
  ‖z_{i+1} − z_i‖ and the distance to the exact backward Euler step (by FFT) per iteration.
* **scaling (Fig 5.5)**: wall time of a few backward Euler steps against the grid size for the
  proximal inner solvers, the fixed-point iteration and dense Newton–Raphson.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .. import solve
from ..data.stiff_problems import HeatEquation
from ..report.plots import pyplot
from ..report.records import Key, Metric
from ..solve.inner import INNER_METHODS, InnerSolver, ProximalProblem
from ..solve.proximal import InnerSolveWarning
from .base import Experiment, ExperimentConfig, RunContext, ThesisNumber
from .claims import Claim, Ordering, Outcome, Verdict
from .grid import cell_log, run_grid
from .timing import median_time

SCHEME_LABELS = {"prox_be": "backward Euler", "prox_cn": "Crank–Nicolson", "prox_bdf2": "BDF2",
                 "prox_bdf3": "BDF3", "prox_bdf4": "BDF4"}
# Table 5.2: final error at t = 1 with step 1/2000, FR at inner step 0.1.
TABLE_5_2 = {"prox_be": 4.68e-7, "prox_cn": 1.75e-6, "prox_bdf2": 1.36e-6, "prox_bdf3": 5.71e-7, "prox_bdf4": 1.15e-6}


@dataclass
class Diffusion1DConfig(ExperimentConfig):
    n: int = 128
    initial: str = "randn"
    t_end: float = 1.0
    schemes: tuple[str, ...] = ("prox_be", "prox_cn", "prox_bdf2", "prox_bdf3", "prox_bdf4")
    step_sizes: tuple[float, ...] = (1 / 2000, 0.01, 0.05, 0.2)
    inner_solvers: tuple[str, ...] = ("fr", "lbfgs")
    inner_step: float = 0.1  # the thesis's FR step; halved automatically while it diverges
    inner_tol: float = 5e-9  # ‖z_{i+1} − z_i‖ rule of Table 5.2
    inner_res_tol: float = 1e-9
    adaptive_tolerances: tuple[float, ...] = (1e-3, 1e-5, 1e-7)  # odekit's adaptive proximal BDF2
    explicit_methods: tuple[str, ...] = ("adaptive_heun", "dopri5")
    explicit_tolerances: tuple[float, ...] = (1e-1, 1e-3, 1e-6)
    convergence_solvers: tuple[str, ...] = ("gd", "nesterov", "nesterov_restart", "fr", "anderson", "lbfgs",
                                            "newton_krylov")
    convergence_step: float = 0.05  # inner step of Fig 5.4 (0.1 diverges here: σλ_max ≈ 32)
    convergence_iters: int = 300
    grid_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)
    scaling_solvers: tuple[str, ...] = ("fr", "lbfgs", "fixed_point", "newton")
    scaling_steps: int = 10
    repeats: int = 1


def _check(config: Diffusion1DConfig) -> None:
    unknown = [s for s in config.schemes if s not in SCHEME_LABELS]
    if unknown:
        raise ValueError(f"unknown scheme(s) {unknown}; choose from {', '.join(SCHEME_LABELS)}")
    if any(not 0 < h <= config.t_end for h in config.step_sizes):
        raise ValueError(f"step sizes must lie in (0, t_end={config.t_end}], got {config.step_sizes}")
    if config.n < 3 or any(n < 3 for n in config.grid_sizes):
        raise ValueError("grid sizes must be at least 3 points")


def _inner_options(config: Diffusion1DConfig, inner: str) -> dict:
    options = {"inner": inner, "inner_tol": config.inner_tol, "inner_res_tol": config.inner_res_tol}
    if inner in ("fr", "gd", "nesterov", "nesterov_restart"):
        options["inner_step"] = config.inner_step
    return options


def _curve_labels() -> dict[str, str]:
    """The label of each Fig 5.3 curve id (``scheme|inner``; adaptive BDF; explicit methods are their own)."""
    return {**{f"{s}|{inner}": f"{label} ({inner})" for s, label in SCHEME_LABELS.items() for inner in INNER_METHODS},
            "prox_bdf|lbfgs": "adaptive proximal BDF2 (lbfgs)"}


@dataclass(frozen=True)
class Point:
    """One point of Fig 5.3: ``method`` on a fixed grid of step ``h`` (a proximal scheme), or adaptive at the
    tolerance ``tol`` (odekit's proximal BDF, on its default inner solver lbfgs, or an explicit method); ``inner``
    solves the proximal steps."""

    method: str
    inner: str | None = None  # None: an explicit method
    h: float | None = None  # None: adaptive, at ``tol``
    tol: float | None = None

    @property
    def curve_id(self) -> str:
        return self.method if self.inner is None else f"{self.method}|{self.inner}"

    @property
    def setting(self) -> str:
        return f"h={self.h:g}" if self.h is not None else f"rtol={self.tol:g}"

    @property
    def key(self) -> str:
        return f"{self.curve_id}|{self.setting}"


def _points(config: Diffusion1DConfig) -> list[Point]:
    """Every point of Fig 5.3."""
    return ([Point(scheme, inner, h=h) for scheme in config.schemes for inner in config.inner_solvers
             for h in config.step_sizes]
            + [Point("prox_bdf", "lbfgs", tol=tol) for tol in config.adaptive_tolerances]
            + [Point(method, tol=tol) for method in config.explicit_methods for tol in config.explicit_tolerances])


def _solve_keywords(config: Diffusion1DConfig, point: Point) -> dict:
    """``solve``'s keywords (method, tolerances, options) for ``point``."""
    if point.h is not None:
        return {"method": point.method, "options": {"step_size": point.h, **_inner_options(config, point.inner)}}
    keywords = {"method": point.method, "rtol": point.tol, "atol": point.tol}
    if point.inner is not None:  # the adaptive proximal BDF: inner solves a hundredth of the tolerance
        keywords["options"] = {"inner_res_tol": point.tol * 1e-2}
    return keywords


def point_record(config: Diffusion1DConfig, problem: HeatEquation, exact: torch.Tensor, point: Point) -> dict:
    """Final error against ``exact`` (the solution at ``t_end``), cost and inner-solve counts of one point of
    Fig 5.3 (the grid's work function)."""
    t = torch.tensor([0.0, config.t_end], dtype=torch.float64)
    keywords = _solve_keywords(config, point)
    # Unconverged inner solves are part of the result: the status column and the log say
    # so once per setting instead of one warning per timed repeat.
    with torch.no_grad(), warnings.catch_warnings(record=True):
        warnings.simplefilter("always", InnerSolveWarning)
        solutions = []
        wall = median_time(lambda: solutions.append(solve(problem, problem.y0, t, throw=False, **keywords)),
                           config.repeats, warmup=False)
    sol = solutions[0]
    finite = bool(torch.isfinite(sol.ys[-1]).all())
    error = (sol.ys[-1] - exact).abs().max().item() if finite else math.nan
    extra = sol.stats.extra
    _log_inner_failures(point.key, sol)
    return {"curve": _curve_labels().get(point.curve_id, point.method), "setting": point.setting,
            "nfe": sol.stats.nfe, "error": error, "steps": sol.stats.steps_accepted, "status": sol.status,
            "inner_iterations": extra.get("inner_iterations", 0), "inner_max": extra.get("inner_iterations_max", 0),
            "inner_failures": extra.get("inner_failures", 0), "step_reductions": extra.get("inner_step_reductions", 0),
            "wall_s": wall}


def _work_precision(config: Diffusion1DConfig, ctx: RunContext, problem: HeatEquation) -> dict:
    work = functools.partial(point_record, config, problem, problem.exact(config.t_end))
    return run_grid(ctx, _points(config), work, "Fig 5.3: error vs NFE", section="work_precision")


def _log_inner_failures(key: str, sol) -> None:
    """One log line for a setting whose inner solves did not all converge."""
    if not sol.ok:
        cell_log(f"[yellow]{key}[/]: status {sol.status}: {sol.stats.extra.get('inner_failures', 0)} of "
                 f"{sol.stats.extra.get('inner_solves', 0)} inner solves did not converge")


def _exact_backward_euler(problem: HeatEquation, y: torch.Tensor, h: float) -> torch.Tensor:
    """``(I + hL)^{-1} y`` by FFT (L is circulant)."""
    spectrum = np.fft.fft(y.numpy()) / (1 + h * problem.eigenvalues)
    return torch.from_numpy(np.fft.ifft(spectrum).real.copy())


@dataclass(frozen=True)
class Trace:
    """One inner solver's iterations on the first proximal backward Euler step (one curve of Fig 5.4)."""

    solver: str

    @property
    def key(self) -> str:
        return self.solver


def trace_record(config: Diffusion1DConfig, problem: HeatEquation, target: torch.Tensor, trace: Trace) -> dict:
    """‖z_{i+1} − z_i‖ and the distance to ``target`` (the exact step) at each iteration of one inner solver
    (the grid's work function)."""
    h = config.step_sizes[0]

    def field(t: float, y: torch.Tensor, side: int = 0) -> torch.Tensor:
        return problem(torch.tensor(t, dtype=torch.float64), y)

    steps, distances = [], []

    def watch(i: int, z: torch.Tensor, step_norm: float) -> None:
        steps.append(step_norm)
        distances.append(float((z.detach() - target).norm() / math.sqrt(len(z))))

    name = trace.solver
    solver = InnerSolver(name, step=config.convergence_step if name not in ("newton_krylov", "newton") else None,
                         tol=0.0, res_tol=1e-13, max_iters=config.convergence_iters, memory=10)
    with torch.no_grad():
        result = solver(ProximalProblem(field, h, problem.y0, h), problem.y0.clone(), callback=watch)
    return {"steps": steps, "distances": distances, "converged": result.converged, "step_used": solver.step}


def _inner_convergence(config: Diffusion1DConfig, ctx: RunContext, problem: HeatEquation) -> dict:
    target = _exact_backward_euler(problem, problem.y0, config.step_sizes[0])
    return run_grid(ctx, [Trace(name) for name in config.convergence_solvers],
                    functools.partial(trace_record, config, problem, target), "Fig 5.4: inner convergence",
                    section="convergence")


@dataclass(frozen=True)
class Timing:
    """``scaling_steps`` backward Euler steps on ``n`` grid points with the inner solver ``inner`` (Fig 5.5)."""

    n: int
    inner: str

    @property
    def key(self) -> str:
        return f"{self.n}|{self.inner}"


def timing_record(config: Diffusion1DConfig, problems: dict[int, HeatEquation], exact: dict[int, torch.Tensor],
                  timing: Timing) -> dict:
    """Wall time, NFE and error against ``exact[n]`` (exact backward Euler) of one point of Fig 5.5 (the grid's
    work function)."""
    problem = problems[timing.n]
    t = torch.tensor([0.0, config.scaling_steps * config.step_sizes[0]], dtype=torch.float64)
    # residual rule only: the step rule can stop a slow solver early (inner.py)
    options = {"step_size": config.step_sizes[0], "inner_max_iters": 5000, **_inner_options(config, timing.inner),
               "inner_tol": 0.0}

    def run_once():
        with torch.no_grad(), warnings.catch_warnings(record=True):
            warnings.simplefilter("always", InnerSolveWarning)  # logged once, counted in the table
            return solve(problem, problem.y0, t, method="prox_be", options=options)

    sol = run_once()
    _log_inner_failures(timing.key, sol)
    wall = median_time(run_once, config.repeats, warmup=False)
    error = (sol.ys[-1] - exact[timing.n]).abs().max().item()
    return {"n": timing.n, "inner": timing.inner, "wall_s": wall, "nfe": sol.stats.nfe, "error": error,
            "failures": sol.stats.extra["inner_failures"]}


def _scaling(config: Diffusion1DConfig, ctx: RunContext) -> dict:
    problems = {n: HeatEquation(n, config.initial, config.seed) for n in config.grid_sizes}
    exact = {n: _exact_steps(problem, config.step_sizes[0], config.scaling_steps) for n, problem in problems.items()}
    return run_grid(ctx, [Timing(n, inner) for n in config.grid_sizes for inner in config.scaling_solvers],
                    functools.partial(timing_record, config, problems, exact), "Fig 5.5: time vs grid size",
                    section="scaling")


def _exact_steps(problem: HeatEquation, h: float, steps: int) -> torch.Tensor:
    y = problem.y0
    for _ in range(steps):
        y = _exact_backward_euler(problem, y, h)
    return y


def run(config: Diffusion1DConfig, ctx: RunContext) -> None:
    _check(config)
    problem = HeatEquation(config.n, config.initial, config.seed)
    ctx.log(f"heat equation, N={config.n}: λ_max = {problem.stiffness:.0f}, so explicit steps are bound near "
            f"{2.8 / problem.stiffness:.1e}; t_end={config.t_end}")
    rows = _work_precision(config, ctx, problem)
    _report_work_precision(config, ctx, rows)
    traces = _inner_convergence(config, ctx, problem)
    _plot_convergence(config, ctx, traces)
    timings = _scaling(config, ctx)
    _report_scaling(config, ctx, timings)
    ctx.judge(_verdicts(config, rows, traces, timings))


def _verdicts(config: Diffusion1DConfig, rows: dict, traces: dict, timings: dict) -> dict[str, Verdict]:
    """Figs 5.3–5.5's claims on what the three parts measured."""
    verdicts = {}
    # Fig 5.3: to reach the best error an explicit solver gets, each proximal scheme (FR) needs fewer NFE
    explicit = {c: [r for r in rows.values() if r["curve"] == c and math.isfinite(r["error"])]
                for c in config.explicit_methods}
    proximal = [f"{SCHEME_LABELS[s]} (fr)" for s in config.schemes] if "fr" in config.inner_solvers else []
    pairs, shown = [], []
    for curve, points in explicit.items():
        if not points:
            continue
        best = min(points, key=lambda r: r["error"])
        needed = {}
        for scheme in proximal:
            enough = [r["nfe"] for r in rows.values() if r["curve"] == scheme and r["error"] <= best["error"]]
            needed[scheme] = min(enough) if enough else math.inf
            pairs.append(needed[scheme] < best["nfe"])
        shown.append(f"{curve} {best['nfe']} for error {best['error']:.2g}, against "
                     + ", ".join(f"{k} {v:g}" for k, v in needed.items()))
    verdicts["fewer_nfe_than_adaptive"] = (
        Verdict(Outcome.AGREES if all(pairs) else Outcome.DIFFERS, "NFE to reach each explicit solver's best error: "
                + "; ".join(shown)) if pairs else
        Verdict(Outcome.NOT_COMPARABLE, "the run has no explicit solver or no FR proximal scheme"))
    spans = {c: max(r["nfe"] for r in points) / min(r["nfe"] for r in points) for c, points in explicit.items()
             if len(points) > 1}
    verdicts["explicit_nfe_flat"] = (
        Verdict(Outcome.AGREES if max(spans.values()) <= FLAT_NFE_SPAN else Outcome.DIFFERS,
                f"largest / smallest NFE over tolerances {', '.join(f'{t:g}' for t in config.explicit_tolerances)} "
                f"(flat: ≤ {FLAT_NFE_SPAN:g}): " + "; ".join(f"{c} {v:.3g}" for c, v in spans.items()))
        if spans else Verdict(Outcome.NOT_COMPARABLE, "one explicit tolerance only"))
    # Fig 5.4: iterations of each inner solver to reach 1e-8 of the exact step (inf: never)
    iterations = {name: {"iterations": next((i + 1 for i, d in enumerate(trace["distances"]) if d <= 1e-8), math.inf)}
                  for name, trace in traces.items()}
    largest, smallest = max(config.grid_sizes), min(config.grid_sizes)
    walls = {inner: {"wall": timings[f"{largest}|{inner}"]["wall_s"]} for inner in config.scaling_solvers
             if f"{largest}|{inner}" in timings}
    verdicts["fr_converges_fastest"] = EXPERIMENT.claims["fr_converges_fastest"].judge(
        iterations, {}, "inner iterations to 1e-8 of the exact step")
    verdicts["proximal_fastest_at_scale"] = EXPERIMENT.claims["proximal_fastest_at_scale"].judge(
        walls, {}, f"wall seconds at N={largest}")
    # Fig 5.5: the margin of FR over fixed point and Newton grows with N
    margins = {other: [timings[f"{n}|{other}"]["wall_s"] / timings[f"{n}|fr"]["wall_s"] for n in (smallest, largest)]
               for other in ("fixed_point", "newton") if all(f"{n}|{k}" in timings for n in (smallest, largest)
                                                              for k in (other, "fr"))}
    verdicts["margin_widens"] = (
        Verdict(Outcome.AGREES if all(b > a for a, b in margins.values()) and largest > smallest else Outcome.DIFFERS,
                f"wall time / FR's at N={smallest} → N={largest}: "
                + "; ".join(f"{k} {a:.2g} → {b:.2g}" for k, (a, b) in margins.items()))
        if margins else Verdict(Outcome.NOT_COMPARABLE, "the run timed neither fixed point nor Newton beside FR"))
    return verdicts


# Fig 5.3's "almost independent of the error": at most this ratio between an explicit solver's largest
# and smallest NFE over its tolerances.
FLAT_NFE_SPAN = 1.5


def _report_work_precision(config: Diffusion1DConfig, ctx: RunContext, rows: dict) -> None:
    header = ["curve", "setting", "final error", "nfe", "wall s", "outer steps", "inner iterations", "max inner",
              "inner failures", "inner step halvings", "status"]
    table = [[r["curve"], r["setting"], f"{r['error']:.3e}", r["nfe"], f"{r['wall_s']:.3f}", r["steps"],
              r["inner_iterations"], r["inner_max"], r["inner_failures"], r["step_reductions"], r["status"]]
             for r in rows.values()]
    ctx.table("work_precision", header, table,
              caption=f"Heat equation N={config.n}, error at t={config.t_end} (max over the grid) against the FFT "
                      f"solution. Proximal inner solves stop at ‖z_(i+1) − z_i‖ ≤ {config.inner_tol:g} or residual "
                      f"RMS ≤ {config.inner_res_tol:g}; FR starts at η = {config.inner_step}.")
    h_thesis = 1 / 2000
    if h_thesis in config.step_sizes and "fr" in config.inner_solvers:
        for scheme in config.schemes:
            row = rows.get(f"{scheme}|fr|h={h_thesis:g}")
            if row is not None:
                ctx.record(Key("final_error_fr", scheme, x=h_thesis), float(f"{row['error']:.3g}"))
    curves: dict[str, list[dict]] = {}
    for key, row in rows.items():  # a row's key is "<curve id>|<setting>"
        curves.setdefault(key.rsplit("|", 1)[0], []).append(row)
    for curve, points in curves.items():
        good = [r["nfe"] for r in points if math.isfinite(r["error"]) and r["error"] <= 1e-5]
        if good:
            ctx.record(Key("fewest_nfe_to_1e-5", curve), min(good))
    _plot_work_precision(config, ctx, rows)


def _plot_work_precision(config, ctx, rows) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    curves = list(dict.fromkeys(r["curve"] for r in rows.values()))
    cmap = plt.get_cmap("tab20")
    for i, curve in enumerate(curves):
        points = sorted((r["nfe"], r["error"]) for r in rows.values()
                        if r["curve"] == curve and math.isfinite(r["error"]) and r["error"] > 0)
        if points:
            explicit = curve in config.explicit_methods
            ax.loglog(*zip(*points), marker="s" if explicit else "o", linestyle="--" if explicit else "-",
                      color=cmap(i % 20), label=curve, markersize=4)
    ax.set_xlabel("function evaluations (outer × inner × per update)")
    ax.set_ylabel(f"final error at t={config.t_end}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(f"Fig 5.3: 1-D heat equation, N={config.n}")
    fig.tight_layout()
    ctx.figure("fig5_3_error_vs_nfe", fig,
               caption="Fig 5.3: final error against NFE; proximal schemes over step sizes (solid), explicit adaptive "
                       "solvers over tolerances (dashed).")


def _plot_convergence(config, ctx, traces) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, trace in traces.items():
        iters = range(1, len(trace["steps"]) + 1)
        axes[0].semilogy(iters, trace["steps"], label=f"{name} (η={trace['step_used']})" if trace["step_used"]
                         else name)
        axes[1].semilogy(iters, trace["distances"], label=name)
    axes[0].set_ylabel("‖z_(i+1) − z_i‖ (RMS)")
    axes[1].set_ylabel("‖z_i − h_1‖ (RMS), h_1 = exact backward Euler step")
    for ax in axes:
        ax.set_xlabel("inner iteration")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig 5.4: inner solvers on one proximal backward Euler step (N={config.n}, "
                 f"h={config.step_sizes[0]:g})")
    fig.tight_layout()
    ctx.figure("fig5_4_inner_convergence", fig,
               caption="Fig 5.4: convergence of the inner solvers for the first backward Euler step.")
    for name, trace in traces.items():
        below = [i + 1 for i, d in enumerate(trace["distances"]) if d <= 1e-8]
        ctx.record(Key("inner_iterations_to_1e-8", name), below[0] if below else "not reached")


def _report_scaling(config, ctx, timings) -> None:
    table = [[r["n"], r["inner"], f"{r['wall_s']:.4f}", r["nfe"], f"{r['error']:.2e}", r["failures"]]
             for r in timings.values()]
    ctx.table("scaling", ["grid points", "inner solver", "wall s", "nfe", "error vs exact BE", "inner failures"],
              table,
              caption=f"{config.scaling_steps} backward Euler steps of h={config.step_sizes[0]:g}; error against exact "
                      "backward Euler (FFT).")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for inner in config.scaling_solvers:
        points = [(r["n"], r["wall_s"]) for r in timings.values() if r["inner"] == inner]
        ax.loglog(*zip(*points), marker="o", label=inner)
    ax.set_xlabel("grid points N")
    ax.set_ylabel("wall time (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("Fig 5.5: backward Euler, time vs grid size")
    fig.tight_layout()
    ctx.figure("fig5_5_time_vs_grid", fig, caption="Fig 5.5: wall time of backward Euler steps against grid size for "
               "proximal inner solvers (fr, lbfgs), fixed point and dense Newton–Raphson.")
    largest = max(config.grid_sizes)
    for inner in config.scaling_solvers:
        row = timings.get(f"{largest}|{inner}")
        if row:
            ctx.record(Key("wall_seconds", inner, x=largest), round(row["wall_s"], 4))


EXPERIMENT = Experiment(
    name="diffusion1d",
    quick_seconds=90,
    title="Proximal solvers on the 1-D heat equation",
    thesis_items="Fig 5.3, Table 5.2, Fig 5.4, Fig 5.5 (eq. 5.18)",
    config_class=Diffusion1DConfig,
    summary="Final error vs NFE of proximal BE/CN/BDF2–4 against explicit adaptive solvers; inner-solver "
            "convergence on one step; time against grid size.",
    thesis={Key("final_error_fr", s, x=1 / 2000): ThesisNumber(v, f"Table 5.2, {SCHEME_LABELS[s]}",
                                                               higher_is_better=False)
            for s, v in TABLE_5_2.items()},
    metrics={"final_error_fr": Metric("final error at t = 1, inner solver FR", "h"),
             "fewest_nfe_to_1e-5": Metric("fewest NFE to a final error ≤ 1e-5"),
             "inner_iterations_to_1e-8": Metric("inner iterations to within 1e-8 of the exact step"),
             "wall_seconds": Metric("wall time of the backward Euler steps (s)", "grid points N")},
    model_labels={**SCHEME_LABELS, **_curve_labels()},
    claims={
        "fewer_nfe_than_adaptive": Claim("Fig 5.3", "Adaptive explicit solvers (adaptive Heun, dopri5) need many more "
                                                    "NFE than the proximal solvers for the same final error."),
        "explicit_nfe_flat": Claim("Fig 5.3", "The explicit solvers' NFE barely depend on the error reached: their "
                                              "steps are bound by stability."),
        "fr_converges_fastest": Ordering("Fig 5.4", "Fletcher–Reeves converges fastest of GD, Nesterov, Nesterov "
                                                    "with restart and FR on one proximal backward Euler step.",
                                         quantity="iterations", low=("fr",),
                                         high=("gd", "nesterov", "nesterov_restart")),
        "proximal_fastest_at_scale": Ordering("Fig 5.5", "Proximal backward Euler (FR) is faster than fixed-point "
                                                         "iteration and Newton–Raphson on the largest grid.",
                                              quantity="wall", low=("fr",), high=("fixed_point", "newton")),
        "margin_widens": Claim("Fig 5.5", "The proximal solver's margin over fixed point and Newton–Raphson widens "
                                          "as the grid grows."),
    },
    profiles={
        "smoke": {"n": 32, "t_end": 0.05, "step_sizes": (0.005, 0.025), "schemes": ("prox_be", "prox_bdf2"),
                  "adaptive_tolerances": (1e-3,), "explicit_tolerances": (1e-3,),
                  "convergence_solvers": ("gd", "fr", "lbfgs"), "convergence_iters": 50,
                  "grid_sizes": (16, 32), "scaling_steps": 2},
        "quick": {"step_sizes": (1 / 2000, 0.05, 0.2), "explicit_tolerances": (1e-3, 1e-6),
                  "adaptive_tolerances": (1e-3, 1e-6), "grid_sizes": (64, 128, 256, 512)},
        "full": {"step_sizes": (1 / 2000, 1 / 500, 0.01, 0.02, 0.05, 0.1, 0.2),
                 "explicit_tolerances": (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
                 "grid_sizes": (64, 128, 256, 512, 1024, 2048), "repeats": 3},
    },
    run=run,
)
