"""``plane_vibration``: the five ODE-RNN hybrids on the F-16 ground vibration test (Fig 3.10, Table 3.4).

Irregular windows of 64 samples (90% of time stamps kept), next-step prediction plus an 8-step
forecast at unit steps after the last input; loss ``0.1·MSE(next step) + MSE(forecast)``. Model
sizes of Table 3.4 (parameter counts within 2% of the thesis's), the authors' initialisation
(every weight ×0.01) and optimiser schedule (Adam, a fresh Adam at 1e-4 from epoch 50, clipping
at 1). Per epoch: training and test loss, forward and backward NFE per batch, time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data import plane_vibration as pv
from ..models.sequence import HybridSizes
from .base import Experiment, RunContext
from .claims import heavy_ball_beats
from .hybrid_training import LABELS, HybridConfig, HybridTask, run_hybrid_experiment
from .training import TRAINING_METRICS

# the authors' HBNODE code: ξ = softplus(ξ̃) with ξ̃ = 0 trainable for both heavy-ball models; GHBNODE gates with tanh.
_XI = {"xi": math.log(2.0), "learn_xi": True}

TASK = HybridTask(
    key="plane_vibration",
    name="plane vibration",
    figure="fig3_10_plane_vibration",
    thesis_figure="Fig 3.10",
    thesis_table="Table 3.4",
    features=pv.FEATURES,
    # Table 3.4; SONODE's n = h1 = h2 = 20 instead of 19 brings its count within 2% of the printed
    # 16,649 (19 gives 15,547); ANODE keeps 22 of its 27 state entries at zero initially.
    sizes={"odernn": HybridSizes(21, (63, 84)), "anode": HybridSizes(27, (83, 108), augment=22),
           "sonode": HybridSizes(20, (20, 20)), "hbnode": HybridSizes(20, (20, 20)),
           "ghbnode": HybridSizes(20, (20, 20))},
    thesis_parameters={"odernn": 15986, "anode": 16730, "sonode": 16649, "hbnode": 16127, "ghbnode": 16127},
    heavy_ball={"hbnode": _XI, "ghbnode": _XI},
    initial_window=pv.WINDOW - 1,
    forecast=pv.FORECAST,
    next_step_weight=0.1,
    load=pv.load_plane_vibration,
    claims={
        "fits_better": heavy_ball_beats("test_loss", ("odernn", "anode"), "Fig 3.10",
                                        "HBNODE-RNN and GHBNODE-RNN fit the vibration better (lower test loss) than "
                                        "ODE-RNN and ANODE-RNN, which learn it poorly."),
        "beats_sonode": heavy_ball_beats("test_loss", ("sonode",), "Fig 3.10",
                                         "HBNODE-RNN and GHBNODE-RNN predict better than SONODE-RNN."),
        "fewer_backward_nfe": heavy_ball_beats("nfe_backward", ("sonode",), "Fig 3.10",
                                               "HBNODE-RNN and GHBNODE-RNN need fewer backward NFE than SONODE-RNN."),
    },
    thesis_epochs=500,
)


@dataclass
class PlaneVibrationConfig(HybridConfig):
    init_scale: float = 0.01  # the authors multiply every weight by 0.01 before training
    sample_feature: int = 2  # acceleration 1


def run(config: PlaneVibrationConfig, ctx: RunContext) -> None:
    run_hybrid_experiment(TASK, config, ctx)


EXPERIMENT = Experiment(
    name="plane_vibration",
    quick_seconds=70,
    title="ODE-RNN hybrids on the plane-vibration time series",
    thesis_items="Fig 3.10, Table 3.4",
    config_class=PlaneVibrationConfig,
    summary="The thesis shows (figure only) ODE-RNN and ANODE-RNN learning the vibration poorly, and HBNODE-RNN "
            "and GHBNODE-RNN predicting better than SONODE-RNN with fewer backward NFE.",
    profiles={
        "smoke": {"models": ("odernn", "hbnode"), "epochs": 1, "batch_size": 8, "train_windows": 8,
                  "test_windows": 8, "tol": 1e-2},
        "quick": {"epochs": 3, "batch_size": 32, "train_windows": 64, "test_windows": 64, "tol": 1e-3,
                  "lr": 3e-3},
        "full": {},
    },
    run=run,
    thesis=TASK.thesis_numbers(),
    metrics=TRAINING_METRICS,
    model_labels=LABELS,
    claims=TASK.claims,
    missing_data=lambda root, config: pv.missing(root),
    download=lambda root, config: pv.download(root),
)
