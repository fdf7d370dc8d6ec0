"""Run folders: created atomically, owned by one live process, resumed only once their owner is gone.

A run folder ``runs/<experiment>/<UTC stamp>[-n]/`` holds ``config.json``, ``status.json`` and
whatever the experiment writes. The process running it holds an exclusive ``flock`` on the
folder's ``.owner.lock`` for as long as it runs. The kernel drops that lock when the process
ends in any way (SIGKILL and power loss of a local disk included), so "is its owner still
alive?" is answered by trying the lock: there is no heartbeat that could go stale, and a run
whose status still says ``running`` but whose lock is free was killed. ``status.json`` names
the owner (pid and host) for people reading it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import itertools
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..report import atomic
from ..report.records import predates_records

LOCK_NAME = ".owner.lock"
UNFINISHED = ("running", "failed", "interrupted", "killed")


class RunLock:
    """The exclusive, non-blocking lock a process holds on the run folder it is running."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another live process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@functools.cache
def code_fingerprint() -> str:
    """A hash of this odekit's source files: two runs with the same one computed their cells with the same code."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def owner() -> dict[str, Any]:
    """Who runs this process: pid and host, as recorded in ``status.json``."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class RunStatus:
    """The record in ``status.json``: state, owner, and the time spent over all of a run's attempts.

    ``seconds`` counts every attempt: an attempt adds its time when it ends, and at every
    checkpoint while it runs, so a killed attempt's time up to its last checkpoint still counts.
    """

    experiment: str
    profile: str
    data_root: str
    state: str = "running"
    started: str = field(default_factory=now_iso)
    seconds: float = 0.0
    attempts: int = 1
    owner: dict[str, Any] = field(default_factory=owner)
    error: str | None = None
    log: str | None = None
    finished: str | None = None
    # code_fingerprint() of the odekit that computed every attempt ("mixed" once two attempts ran different
    # code): another run takes this run's grid cells only when it runs the same code
    code: str = ""

    @classmethod
    def read(cls, folder: Path) -> RunStatus | None:
        raw = read_json(Path(folder) / "status.json", None)
        if not isinstance(raw, dict):
            return None
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        try:
            return cls(**{"experiment": "", "profile": "", "data_root": "", **known})
        except TypeError:
            return None

    def write(self, folder: Path) -> None:
        atomic.write_json(Path(folder) / "status.json", {k: v for k, v in asdict(self).items() if v is not None})


class RunClock:
    """The status of the attempt in progress, with its time added to the previous attempts'."""

    def __init__(self, folder: Path, status: RunStatus) -> None:
        self.folder, self.status = folder, status
        self._before, self._start = status.seconds, time.monotonic()

    def update(self, **changes: Any) -> None:
        """Write the status with the seconds so far and ``changes`` applied."""
        for key, value in changes.items():
            setattr(self.status, key, value)
        self.status.seconds = round(self._before + time.monotonic() - self._start, 2)
        self.status.write(self.folder)


def new_run_dir(runs: Path, name: str) -> Path:
    """Create and return a run folder no other process has: ``mkdir`` itself decides who gets a name."""
    parent = Path(runs) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in itertools.count(1):
        path = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def claim_resumable(runs: Path, name: str, config: dict[str, Any], data_root: Path,
                    notice: Callable[[str], None]) -> tuple[Path, RunLock, RunStatus] | None:
    """Lock the newest unfinished run of ``name`` with this config and data root whose owner is gone.

    A run another live process holds is never taken; one on another data root is not resumed
    here (its results would mix two datasets). ``notice`` hears why a candidate was passed over.
    """
    for run in runs_newest_first(runs, name):
        status = RunStatus.read(run)
        if status is not None and status.state == "running":
            status = settle_if_killed(run) or status
        if status is None or status.state not in UNFINISHED or read_json(run / "config.json", None) != config:
            continue
        if status.data_root and status.data_root != str(data_root):
            notice(f"unfinished run {run} used data root {status.data_root}, not {data_root}: not resuming it")
            continue
        lock = RunLock(run)
        if not lock.acquire():
            notice(f"run {run} is still running (pid {status.owner.get('pid')} on {status.owner.get('host')}): "
                   "starting a new run beside it")
            continue
        status = RunStatus.read(run)  # its owner may have finished between the first read and the lock
        if status is None or status.state not in UNFINISHED:
            lock.release()
            continue
        return run, lock, status
    return None


def settle_if_killed(run: Path) -> RunStatus | None:
    """Mark a run whose status says ``running`` but whose owner is gone as ``killed``; returns the new status.

    ``None`` if its owner is alive (the lock is held) or it is no longer ``running``.
    """
    lock = RunLock(run)
    if not lock.acquire():
        return None
    try:
        status = RunStatus.read(run)
        if status is None or status.state != "running":
            return None
        status.state = "killed"
        status.error = (f"killed: its process (pid {status.owner.get('pid')} on {status.owner.get('host')}) ended "
                        "without finishing; the same command resumes it")
        status.write(run)
        return status
    finally:
        lock.release()


def runs_newest_first(runs: Path, name: str) -> list[Path]:
    """The run folders of experiment ``name`` under ``runs``, newest first (none if it never ran)."""
    folder = Path(runs) / name
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=_stamp_order, reverse=True)


def _stamp_order(path: Path) -> tuple[str, int]:
    """``<stamp>-<n>`` sorts by stamp, then by ``n`` as a number (``-10`` after ``-9``)."""
    stamp, _, n = path.name.partition("-")
    return stamp, int(n) if n.isdigit() else 1


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left behind."""
    leftovers = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def latest_complete(runs: Path, name: str, config: dict[str, Any], data_root: Path) -> tuple[Path, RunStatus] | None:
    """The newest complete run of ``name`` with exactly this config on this data root (``None`` if none)."""
    for run in runs_newest_first(runs, name):
        status = RunStatus.read(run)
        if (status is not None and status.state == "complete" and status.data_root in ("", str(data_root))
                and read_json(run / "config.json", None) == config and not predates_records(run)):
            return run, status
    return None


def runs_sharing_cells(runs: Path, name: str, config: dict[str, Any], data_root: Path,
                       grid_fields: tuple[str, ...], exclude: Path | None = None) -> list[Path]:
    """The runs of ``name`` whose finished grid cells a run of ``config`` may take as its own, newest first.

    They used the same data root, the same odekit code (:func:`code_fingerprint`) and the same
    settings apart from ``grid_fields`` (the settings that only choose which cells the grid has:
    datasets, models, splits, …) and the profile's name, so a cell with the same key computes the
    same record in either run. ``exclude`` is the run itself.
    """
    if not grid_fields:
        return []
    ignored = {*grid_fields, "profile"}

    def settings(values: Any) -> dict[str, Any] | None:
        return {k: v for k, v in values.items() if k not in ignored} if isinstance(values, dict) else None

    wanted = settings(config)

    def shares(run: Path) -> bool:
        status = RunStatus.read(run)
        return (run != exclude and status is not None and status.data_root == str(data_root)
                and status.code == code_fingerprint() and not predates_records(run)
                and settings(read_json(run / "config.json", None)) == wanted)

    return [run for run in runs_newest_first(runs, name) if shares(run)]
