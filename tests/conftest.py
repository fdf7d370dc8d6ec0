import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def data_root() -> Path:
    """The offline data root (ODEKIT_DATA, as CI sets it); tests needing real data skip without it."""
    root = os.environ.get("ODEKIT_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("ODEKIT_DATA is not set to a data folder")
    return Path(root)
