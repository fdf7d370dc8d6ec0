"""Wall-clock measurement shared by experiments and benchmarks."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs (after one untimed run if ``warmup``)."""
    if warmup:
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, alternating between them so machine noise hits all alike."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def machine_info() -> dict[str, object]:
    """What a timing was measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
