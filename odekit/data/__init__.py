"""Datasets: one data root, real loaders, synthetic generators."""

from .root import DataUnavailableError, data_root

__all__ = ["data_root", "DataUnavailableError"]
