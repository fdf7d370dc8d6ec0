"""``stiff_scalar``: forward, backward and proximal backward Euler on eqs. 5.10 and 5.11 (Fig 5.2).

Step 0.01 for every solver, as in the thesis, and a second, larger step (0.05 by default) at
which forward Euler is unstable on eq. 5.11 (``50 h > 2``). Proximal backward Euler solves each
step's proximal problem (5.5) by gradient descent (5.7) and stops on the thesis's rule
‖z_{i+1} − z_i‖ ≤ ε; as ε shrinks it
approaches exact backward Euler (§5.3.2). Exact backward Euler is the same scheme with a
Newton inner solve to round-off.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from .. import solve
from ..data.stiff_problems import SCALAR_PROBLEMS
from ..report.plots import pyplot
from ..report.records import Key, Metric
from .base import Experiment, ExperimentConfig, RunContext
from .claims import Claim, Outcome, Verdict

EXACT_INNER = {"inner": "newton", "inner_tol": 0.0, "inner_res_tol": 1e-15, "inner_max_iters": 50}


@dataclass
class StiffScalarConfig(ExperimentConfig):
    steps: tuple[float, ...] = (0.01, 0.05)  # the first is the thesis's and the figure's
    t_end: float = 2.0
    inner_tolerances: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    inner_step: float = 0.5  # GD step on the residual (dimensionless; 1 = fixed-point iteration)
    outputs: int = 201


PROX_PREFIX = "prox_be_eps"


def _prox_id(eps: float) -> str:
    return f"{PROX_PREFIX}{eps:g}"


def _solvers(config: StiffScalarConfig) -> dict[str, tuple[str, dict]]:
    """``{solver id: (method, options)}``: forward and exact backward Euler, and proximal BE at each ε."""
    solvers = {"forward_euler": ("euler", {}), "backward_euler": ("prox_be", EXACT_INNER)}
    for eps in config.inner_tolerances:
        # Algorithm 1 starts each inner solve from h_k (no extrapolated warm start)
        solvers[_prox_id(eps)] = ("prox_be", {"inner": "gd", "inner_step": config.inner_step,
                                              "inner_tol": eps, "inner_res_tol": 0.0,
                                              "warm_start": "previous"})
    return solvers


def _labels(tolerances) -> dict[str, str]:
    return {"forward_euler": "forward Euler", "backward_euler": "backward Euler",
            **{_prox_id(eps): _prox_label(eps) for eps in tolerances}}


def _prox_label(eps: float) -> str:
    return f"prox BE, ε={eps:g}"


class SolverLabels(Mapping[str, str]):
    """The report's labels of this experiment's solvers: proximal BE at any inner tolerance a run chose
    (``--set inner_tolerances=…``), not only the profiles' ones."""

    _fixed = _labels(())

    def __getitem__(self, solver: str) -> str:
        if solver in self._fixed:
            return self._fixed[solver]
        if solver.startswith(PROX_PREFIX):
            try:
                return _prox_label(float(solver[len(PROX_PREFIX):]))
            except ValueError:
                pass
        raise KeyError(solver)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fixed)

    def __len__(self) -> int:
        return len(self._fixed)


def run(config: StiffScalarConfig, ctx: RunContext) -> None:
    if not config.steps or any(not 0 < h < config.t_end for h in config.steps):
        raise ValueError(f"every step must lie in (0, t_end={config.t_end}), got steps={config.steps}")
    t = torch.linspace(0.0, config.t_end, config.outputs, dtype=torch.float64)
    solvers = _solvers(config)
    labels = _labels(config.inner_tolerances)
    curves: dict[str, list[float]] = {}
    finals: dict[tuple[str, float, str], float] = {}
    rows = []
    with ctx.progress(len(config.steps) * len(SCALAR_PROBLEMS) * len(solvers), "stiff scalar ODEs") as advance:
        for h in config.steps:
            for problem, (f, exact) in SCALAR_PROBLEMS.items():
                reference = exact(t)
                for solver, (method, options) in solvers.items():
                    sol = solve(f, torch.tensor(1.0, dtype=torch.float64), t, method=method, throw=False,
                                options={"step_size": h, **options})
                    errors = (sol.ys - reference).abs()
                    if h == config.steps[0]:
                        curves[f"{problem}|{solver}"] = errors.tolist()
                    extra = sol.stats.extra
                    final = errors[-1].item()
                    finals[(problem, h, solver)] = final
                    rows.append([problem, h, labels[solver], f"{final:.3e}", f"{errors.max().item():.3e}",
                                 sol.stats.nfe, extra.get("inner_iterations", 0),
                                 extra.get("inner_iterations_max", 0)])
                    ctx.record(Key("final_error", solver, problem, h), float(f"{final:.4g}"))
                    advance()
    ctx.table("stiff_scalar", ["problem", "step", "solver", "error at t_end", "max error", "nfe",
                               "inner iterations", "max inner iterations"], rows,
              caption=f"Steps {', '.join(map(str, config.steps))} on [0, {config.t_end}]; proximal BE by gradient "
                      f"descent (η = {config.inner_step}) from h_k, stopped at ‖z_(i+1) − z_i‖ ≤ ε.")
    ctx.judge(_verdicts(config, finals, labels))
    _plot(config, ctx, t, curves, labels)


def _verdicts(config: StiffScalarConfig, finals: dict, labels: dict[str, str]) -> dict[str, Verdict]:
    """Fig 5.2's two claims at the thesis's step (the first of ``config.steps``), on both equations."""
    h = config.steps[0]
    proximal = [_prox_id(eps) for eps in config.inner_tolerances]
    gaps, shown = [], []
    for problem in SCALAR_PROBLEMS:
        gap = [abs(finals[(problem, h, p)] - finals[(problem, h, "backward_euler")]) for p in proximal]
        gaps.append(all(b <= a for a, b in itertools.pairwise(gap)))
        shown.append(f"{problem}: " + ", ".join(f"{g:.2g}" for g in gap))
    approach = Verdict(Outcome.AGREES if all(gaps) else Outcome.DIFFERS,
                       f"|error(prox BE) − error(BE)| at t={config.t_end:g}, h={h:g}, for ε = "
                       f"{', '.join(f'{eps:g}' for eps in config.inner_tolerances)}: {'; '.join(shown)}")
    tightest = proximal[-1]
    wins, shown = [], []
    for problem in SCALAR_PROBLEMS:
        for step in config.steps:
            prox, euler = finals[(problem, step, tightest)], finals[(problem, step, "forward_euler")]
            if step == h:
                wins.append(prox < euler)
            shown.append(f"{problem} h={step:g}: {prox:.3g} vs {euler:.3g}")
    beats = Verdict(Outcome.AGREES if all(wins) else Outcome.DIFFERS,
                    f"final error of {labels[tightest]} vs forward Euler (judged at the thesis's h={h:g}): "
                    f"{'; '.join(shown)}")
    return {"prox_approaches_backward_euler": approach, "prox_beats_forward_euler": beats}


def _plot(config, ctx, t, curves, labels) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    proximal = [_prox_id(eps) for eps in config.inner_tolerances]
    colours = plt.get_cmap("viridis")
    for row, problem in enumerate(SCALAR_PROBLEMS):
        for col, reference in enumerate(("backward_euler", "forward_euler")):
            ax = axes[row, col]
            ax.semilogy(t, curves[f"{problem}|{reference}"], color="black", linewidth=2, label=labels[reference])
            for i, solver in enumerate(proximal):
                ax.semilogy(t, curves[f"{problem}|{solver}"], color=colours(i / max(1, len(proximal) - 1)),
                            linestyle="--", label=labels[solver])
            ax.set_title(f"({'abcd'[2 * row + col]}) {problem}: proximal BE vs {labels[reference]}")
            ax.set_xlabel("t")
            ax.set_ylabel("|error|")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure("fig5_2_error_vs_time", fig,
               caption=f"Fig 5.2 (step {config.steps[0]}): error against time of proximal backward Euler "
                       "at several inner tolerances, beside "
                       "exact backward Euler (a, c) and forward Euler (b, d); eq. 5.10 top, eq. 5.11 bottom.")


EXPERIMENT = Experiment(
    name="stiff_scalar",
    quick_seconds=5,
    title="Forward, backward and proximal backward Euler on scalar test ODEs",
    thesis_items="Fig 5.2 (eqs. 5.10, 5.11)",
    config_class=StiffScalarConfig,
    summary="Error against time at step 0.01 (and 0.05); the proximal scheme approaches backward Euler as "
            "the inner tolerance shrinks. The thesis prints no numbers for this figure.",
    profiles={
        "smoke": {"t_end": 1.0, "inner_tolerances": (1e-2, 1e-4), "outputs": 51},
        "quick": {},
        "full": {"t_end": 4.0, "inner_tolerances": (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7), "outputs": 401},
    },
    run=run,
    metrics={"final_error": Metric("error at t_end", "h")},
    model_labels=SolverLabels(),
    claims={
        "prox_approaches_backward_euler": Claim(
            "Fig 5.2 (a), (c)", "Proximal backward Euler approaches backward Euler as the inner tolerance ε "
                                "shrinks, on eq. 5.10 and eq. 5.11."),
        "prox_beats_forward_euler": Claim(
            "Fig 5.2 (b), (d)", "With a small enough ε, proximal backward Euler accumulates less error than forward "
                                "Euler at step 0.01 (eq. 5.10), and forward Euler does much worse on the stiff eq. "
                                "5.11."),
    },
)
