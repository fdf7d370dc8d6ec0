"""The experiment registry: every thesis experiment odekit reproduces, by name."""

from __future__ import annotations

from ..solve.errors import did_you_mean
from .base import PROFILES, ConfigError, Experiment, ExperimentConfig, RunContext, ThesisNumber, execute, open_run

EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    if set(experiment.profiles) != set(PROFILES):
        raise ValueError(f"experiment {experiment.name} must define the profiles {PROFILES}")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}{did_you_mean(name, EXPERIMENTS)}; "
                          f"registered: {', '.join(EXPERIMENTS) or 'none'}")
    return EXPERIMENTS[name]


# Importing a module registers its experiment.
from . import (  # noqa: E402,F401
    adjoint_decay,
    grand_depth,
    grand_labels,
    grand_variants,
    diffusion1d,
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

__all__ = ["EXPERIMENTS", "register", "get", "Experiment", "ExperimentConfig", "RunContext", "ThesisNumber",
           "ConfigError", "execute", "open_run", "PROFILES"]
