"""Where datasets live: ``--data-dir``, else ``$ODEKIT_DATA``, else a per-user cache folder."""

from __future__ import annotations

import os
from pathlib import Path


class DataUnavailableError(FileNotFoundError):
    """A dataset's files are absent and cannot be downloaded here; the message says where to put them."""


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root folder (not created here)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("ODEKIT_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "odekit" / "data"
