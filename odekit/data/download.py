"""Downloading dataset files into the data root, with checksums."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path

from .root import DataUnavailableError


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of the bytes of ``path``."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, expected: str | None, algorithm: str = "sha256") -> Path:
    """Download ``url`` to ``target`` (via a partial file), and check its digest before keeping it.

    ``expected=None`` skips the check, for sources that publish no checksum (the content is then
    validated by its loader).
    """
    target = Path(target)
    tmp = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # a read-only data root fails here
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataUnavailableError(
            f"could not download {url} ({err}); put the file at {target} by hand, or point --data-dir / "
            "ODEKIT_DATA at a folder that has it"
        ) from None
    if expected is not None and file_digest(tmp, algorithm) != expected:
        tmp.unlink()
        raise DataUnavailableError(f"{url} downloaded with a wrong {algorithm} checksum; try again later")
    tmp.replace(target)
    return target
