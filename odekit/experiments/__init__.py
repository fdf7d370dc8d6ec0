"""The experiment registry: every thesis experiment odekit reproduces, by name."""

from __future__ import annotations

from ..solve.errors import did_you_mean
from .base import PROFILES, ConfigError, Experiment, ExperimentConfig, RunContext, ThesisNumber, execute, open_run

EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the table (the built-in ones below, or one of your own)."""
    if set(experiment.profiles) != set(PROFILES):
        raise ValueError(f"experiment {experiment.name} must define the profiles {PROFILES}")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}{did_you_mean(name, EXPERIMENTS)}; "
                          f"registered: {', '.join(EXPERIMENTS) or 'none'}")
    return EXPERIMENTS[name]


# The table of experiments, in the order reproduce runs them.
from . import (  # noqa: E402
    adjoint_decay,
    cnf_mnist,
    diffusion1d,
    grand_depth,
    grand_labels,
    grand_proximal,
    grand_t_search,
    grand_variants,
    hb_grand,
    hb_optim_demo,
    image_classification,
    nfe_vs_tolerance,
    plane_vibration,
    pointcloud,
    silverbox_growth,
    stiff_scalar,
    walker2d,
    work_precision,
)

for _module in (plane_vibration, walker2d, adjoint_decay, grand_depth, grand_labels, grand_t_search, grand_variants,
                hb_grand, diffusion1d, hb_optim_demo, pointcloud, image_classification, nfe_vs_tolerance,
                silverbox_growth, stiff_scalar, work_precision, grand_proximal, cnf_mnist):
    register(_module.EXPERIMENT)

__all__ = ["EXPERIMENTS", "register", "get", "Experiment", "ExperimentConfig", "RunContext", "ThesisNumber",
           "ConfigError", "execute", "open_run", "PROFILES"]
