"""Where datasets live: ``--data-dir``, else ``$ODEKIT_DATA``, else a per-user cache folder.

Also the errors of the data layer, all :class:`DataError`: a dataset that is absent
(:class:`DataUnavailableError`), a file that is there but cannot be parsed
(:class:`DataCorruptError`) and a file or folder that may not be read
(:class:`DataPermissionError`); each message names the path and says how to fix it.
:func:`read_data_file` and :func:`reading` turn whatever reading a file raises into one of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")

REPLACE_ADVICE = ("delete it so that it is downloaded again (where there is internet), put a good copy in its place, "
                  "or point --data-dir / ODEKIT_DATA at a folder with a good copy")
PERMISSION_ADVICE = ("make it readable (chmod a+r on the file, a+rx on its folders), or point --data-dir / "
                     "ODEKIT_DATA at a readable copy")
_DETAIL_CHARS = 200


class DataError(OSError):
    """A dataset cannot be used; the message names the file or folder and says how to fix it."""


class DataUnavailableError(DataError, FileNotFoundError):
    """A dataset's files are absent and cannot be downloaded here; the message says where to put them."""


class DataCorruptError(DataError):
    """A data file is there but truncated or not in its format; the message names it and how to replace it."""


class DataPermissionError(DataError, PermissionError):
    """A data file or folder may not be read; the message names it and says to fix its permissions."""


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root folder (not created here)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("ODEKIT_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "odekit" / "data"


def corrupt(path: Path, problem: str, advice: str = REPLACE_ADVICE) -> DataCorruptError:
    """A :class:`DataCorruptError` saying that ``path`` ``problem`` (e.g. "is truncated"), then ``advice``."""
    return DataCorruptError(f"{path} {problem}; {advice}")


def describe_error(err: BaseException) -> str:
    """``err`` as one short line: its type and the start of its message."""
    # parsers put line lists in their messages (numpy's genfromtxt one line per bad row); keep one short line
    text = " ".join(str(err).split())
    text = text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + " …"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextmanager
def reading(path: Path, advice: str = REPLACE_ADVICE) -> Iterator[None]:
    """Raise whatever reading or parsing ``path`` inside the block raises as a :class:`DataError` naming it.

    Absent: :class:`DataUnavailableError`; not readable (the file, or a folder on the way):
    :class:`DataPermissionError`; anything else (truncated gzip, bad bytes, a CSV row that does not
    parse): :class:`DataCorruptError`, with ``advice`` on replacing the file. A :class:`DataError`
    raised in the block passes unchanged.
    """
    try:
        yield
    except DataError:
        raise
    except PermissionError as err:
        raise DataPermissionError(f"cannot read {path} ({describe_error(err)}); {PERMISSION_ADVICE}") from err
    except FileNotFoundError as err:
        raise DataUnavailableError(f"{path} is missing ({describe_error(err)}); put the file there, or point "
                                   "--data-dir / ODEKIT_DATA at a folder that has it") from err
    except Exception as err:  # gzip, zlib, numpy and pickle each raise their own types for bad bytes
        raise corrupt(path, f"is truncated or corrupt ({describe_error(err)})", advice) from err


def read_data_file(path: Path, parse: Callable[[BinaryIO], T], advice: str = REPLACE_ADVICE) -> T:
    """``parse`` applied to ``path`` opened for binary reading, with failures raised as by :func:`reading`."""
    path = Path(path)
    with reading(path, advice), path.open("rb") as fh:
        return parse(fh)


def is_data_file(path: Path) -> bool:
    """Whether ``path`` is a file; a folder on the way that may not be searched raises :class:`DataPermissionError`."""
    path = Path(path)
    with reading(path):
        return path.is_file()
