"""``work_precision``: error against cost for every explicit method, odekit beside torchdiffeq.

For each problem (Van der Pol μ = 1, Lotka–Volterra, a linear oscillator with exact solution,
a random MLP field) and each method, sweep the tolerance (adaptive methods) or the step
size (fixed-step methods), and record the error at the output times against the reference,
the number of function evaluations and the wall time. torchdiffeq's methods are run on the
same problems when it is installed. Not a thesis figure: the engine's own calibration, and a
tool for choosing a solver.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from dataclasses import dataclass

import torch

from .. import solve
from ..data.ode_problems import ODEProblem
from ..data.ode_problems import problems as problem_set
from ..report.plots import pyplot
from ..report.records import Key, Metric
from ..solve import METHODS
from .base import Experiment, ExperimentConfig, RunContext
from .grid import run_grid
from .timing import median_time

TORCHDIFFEQ_METHODS = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "euler", "midpoint", "rk4")


@dataclass
class WorkPrecisionConfig(ExperimentConfig):
    problems: tuple[str, ...] = ("van_der_pol", "lotka_volterra", "oscillator", "mlp")
    methods: tuple[str, ...] = ("euler", "midpoint", "rk4", "adaptive_heun", "bosh3", "dopri5", "tsit5", "dopri8")
    tolerances: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
    # Steps that divide the spacing of the output times: fixed grids interpolate linearly between
    # steps (as torchdiffeq), which would otherwise dominate the error.
    step_sizes: tuple[float, ...] = (0.1, 0.05, 0.025, 0.01, 0.005)
    outputs: int = 11
    repeats: int = 3
    # Settings costing more evaluations than this are left out (low-order methods at tight tolerances).
    max_nfe: int = 20000
    compare_torchdiffeq: bool = True


def _error(ys: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest error at the output times, relative to the solution's size."""
    return float((ys - reference).abs().max() / reference.abs().max())


def _settings(config: WorkPrecisionConfig, method: str) -> list[tuple[str, dict]]:
    """(label, solve keywords) for each point of one method's curve."""
    if METHODS[method].adaptive:
        return [(f"rtol={tol:g}", {"rtol": tol, "atol": tol * 1e-2}) for tol in config.tolerances]
    return [(f"h={h:g}", {"options": {"step_size": h}}) for h in config.step_sizes]


@dataclass(frozen=True)
class Point:
    """One point of a curve: ``method`` of ``library`` on ``problem`` at ``setting`` (a label of :func:`_settings`)."""

    problem: str
    library: str
    method: str
    setting: str

    @property
    def key(self) -> str:
        return f"{self.problem}|{self.library}|{self.method}|{self.setting}"


def point_record(config: WorkPrecisionConfig, problems: dict[str, ODEProblem], references: dict[str, torch.Tensor],
                 point: Point) -> dict:
    """Error, NFE and wall time of one point, or ``{"skipped": True}`` past ``max_nfe`` (the grid's work function)."""
    problem = problems[point.problem]
    kwargs = dict(_settings(config, point.method))[point.setting]
    measure = _odekit_point if point.library == "odekit" else _torchdiffeq_point
    record = measure(problem, problem.times(config.outputs), references[point.problem], point.method, kwargs, config)
    return record if record is not None else {"skipped": True}


def _odekit_point(problem, t, reference, method, kwargs, config) -> dict | None:
    # Capped by evaluations only: a low-order method may need more steps than the default step cap.
    options = {**kwargs.get("options", {}), "max_nfe": config.max_nfe, "max_num_steps": config.max_nfe}
    call = dict(kwargs, options=options)
    with torch.no_grad():
        sol = solve(problem.f, problem.y0, t, method=method, throw=False, **call)
        if not sol.ok:
            return None
        wall = median_time(lambda: solve(problem.f, problem.y0, t, method=method, **call), config.repeats, warmup=False)
    return {"error": _error(sol.ys, reference), "nfe": sol.stats.nfe, "wall_s": wall}


def _torchdiffeq_point(problem, t, reference, method, kwargs, config) -> dict:
    import torchdiffeq

    calls = [0]

    def counted(tt, y):
        calls[0] += 1
        return problem.f(tt, y)

    with torch.no_grad():
        ys = torchdiffeq.odeint(counted, problem.y0, t, method=method, **kwargs)
        wall = median_time(lambda: torchdiffeq.odeint(problem.f, problem.y0, t, method=method, **kwargs),
                           config.repeats, warmup=False)
    return {"error": _error(ys, reference), "nfe": calls[0], "wall_s": wall}


def _have_torchdiffeq() -> bool:
    try:
        import torchdiffeq  # noqa: F401
    except ImportError:
        return False
    return True


def run(config: WorkPrecisionConfig, ctx: RunContext) -> None:
    problems = problem_set(config.seed)
    unknown = [p for p in config.problems if p not in problems]
    if unknown:
        raise ValueError(f"unknown problem(s) {unknown}; available: {', '.join(problems)}")
    bad = [m for m in config.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; available: {', '.join(sorted(METHODS))}")
    libraries = ["odekit"] + (["torchdiffeq"] if config.compare_torchdiffeq and _have_torchdiffeq() else [])
    if config.compare_torchdiffeq and len(libraries) == 1:
        ctx.log("torchdiffeq is not installed: plotting odekit only (pip install torchdiffeq to compare)")
    points = [Point(p, lib, m, label) for p in config.problems for m in config.methods for label, _ in
              _settings(config, m) for lib in libraries if lib == "odekit" or m in TORCHDIFFEQ_METHODS]
    references = {name: problems[name].reference(problems[name].times(config.outputs)) for name in config.problems}
    work = functools.partial(point_record, config, {name: problems[name] for name in config.problems}, references)
    done = run_grid(ctx, [p for p in points if p.library == "odekit"], work, "work–precision (odekit)",
                    section="rows")
    # A setting too costly for odekit's cap is not spent on the peer either: the peers run after odekit's points.
    peers = [p for p in points if p.library != "odekit"
             and not done[dataclasses.replace(p, library="odekit").key].get("skipped")]
    if peers:
        done |= run_grid(ctx, peers, work, "work–precision (torchdiffeq)", section="rows")
    rows = {p.key: done.get(p.key, {"skipped": True}) for p in points}

    header = ["problem", "library", "method", "setting", "error", "nfe", "wall_s"]
    table = []
    for key, point in rows.items():
        if point.get("skipped"):
            continue
        problem_name, library, method, label = key.split("|")
        table.append([problem_name, library, method, label, f"{point['error']:.3e}", point["nfe"],
                      f"{point['wall_s']:.5f}"])
    ctx.table("work_precision", header, table,
              caption="Error (max over output times, relative to the solution's size), NFE and median wall "
                      f"time of each solve; settings beyond max_nfe={config.max_nfe} are left out.")
    _summarise(config, ctx, rows, libraries)
    _plot(config, ctx, rows, problems, libraries)


def _summarise(config, ctx, rows, libraries) -> None:
    """Per problem: odekit / torchdiffeq NFE and wall-time ratios for dopri5, over the tolerances."""
    if "torchdiffeq" not in libraries or "dopri5" not in config.methods:
        return
    for problem_name in config.problems:
        nfe, wall = [], []
        for label, _ in _settings(config, "dopri5"):
            ours = rows.get(f"{problem_name}|odekit|dopri5|{label}", {})
            theirs = rows.get(f"{problem_name}|torchdiffeq|dopri5|{label}", {})
            if "nfe" in ours and "nfe" in theirs:
                nfe.append(ours["nfe"] / theirs["nfe"])
                wall.append(ours["wall_s"] / theirs["wall_s"])
        if nfe:
            ctx.record(Key("nfe_ratio", "dopri5", problem_name), round(statistics.median(nfe), 3))
            ctx.record(Key("wall_time_ratio", "dopri5", problem_name), round(statistics.median(wall), 3))


def _plot(config, ctx, rows, problems, libraries) -> None:
    plt = pyplot()

    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(config.methods)}
    for problem_name in config.problems:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for method in config.methods:
            for library in libraries:
                points = [rows.get(f"{problem_name}|{library}|{method}|{label}", {})
                          for label, _ in _settings(config, method)]
                points = [p for p in points if "error" in p and p["error"] > 0 and math.isfinite(p["error"])]
                if not points:
                    continue
                style = dict(color=colours[method], marker="o" if library == "odekit" else "x",
                             linestyle="-" if library == "odekit" else "--", markersize=4,
                             label=f"{method} ({library})")
                errors = [p["error"] for p in points]
                axes[0].loglog([p["nfe"] for p in points], errors, **style)
                axes[1].loglog([p["wall_s"] for p in points], errors, **style)
        axes[0].set_xlabel("function evaluations")
        axes[1].set_xlabel("wall time per solve (s)")
        for ax in axes:
            ax.set_ylabel("relative max error")
            ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle(f"Work–precision: {problems[problem_name].title}")
        ctx.figure(f"work_precision_{problem_name}", fig,
                   caption=f"{problems[problem_name].title}: error vs NFE (left) and vs wall time (right); "
                           "solid = odekit, dashed = torchdiffeq.")


EXPERIMENT = Experiment(
    name="work_precision",
    quick_seconds=85,
    title="Work–precision of the explicit solvers",
    thesis_items="engine calibration (no thesis figure)",
    metrics={"nfe_ratio": Metric("NFE odekit / torchdiffeq (median over tolerances)"),
             "wall_time_ratio": Metric("wall time odekit / torchdiffeq (median over tolerances)")},
    config_class=WorkPrecisionConfig,
    summary="Error vs NFE and wall time for every explicit method on four problems, with torchdiffeq's "
            "methods on the same plots.",
    profiles={
        "smoke": {"tolerances": (1e-3, 1e-6), "step_sizes": (0.1, 0.05), "outputs": 5, "repeats": 1,
                  "max_nfe": 5000, "problems": ("van_der_pol", "oscillator")},
        "quick": {"tolerances": (1e-3, 1e-5, 1e-7, 1e-9), "step_sizes": (0.1, 0.025, 0.01), "repeats": 2,
                  "max_nfe": 10000},
        "full": {"tolerances": tuple(10.0**-k for k in range(3, 13)),
                 "step_sizes": (0.1, 0.05, 0.025, 0.01, 0.005, 0.0025, 0.001), "repeats": 7,
                 "max_nfe": 1_000_000},
    },
    run=run,
)
