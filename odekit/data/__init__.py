"""Datasets: one data root, real loaders, synthetic generators."""

from .root import DataCorruptError, DataError, DataPermissionError, DataUnavailableError, data_root

__all__ = ["DataCorruptError", "DataError", "DataPermissionError", "DataUnavailableError", "data_root"]
