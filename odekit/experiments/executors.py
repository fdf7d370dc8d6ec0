"""Where the cells of an experiment's grid run: in this process, or as tasks on a Ray cluster.

An executor maps a pure, picklable function over cells and yields ``(cell, record)`` pairs as
cells finish, in any order; :func:`~odekit.experiments.grid.run_grid` streams each record into
the run folder. :class:`LocalExecutor` runs them one after another here. :class:`RayExecutor`
submits each cell as a Ray task holding ``threads`` CPUs (and ``gpus`` GPUs): torch in the task
runs at exactly that many threads, so tasks sharing a machine do not oversubscribe its cores
(two small-model processes on 2 cores each at the default thread count slowed each other 5× or
more). A task whose worker dies (killed, out of memory, a lost node) is retried by Ray up to
``retries`` times; an exception raised by the cell itself is not retried and fails the run.

``ray.init()`` with no address starts a local cluster of ``workers × threads`` CPUs and shuts it
down afterwards; with ``address`` (or ``RAY_ADDRESS``) the executor joins an existing cluster
(``ray start --head`` on one machine, ``ray start --address=…`` on the others; every node needs
odekit installed and the data at the same path) and keeps at most ``workers`` cells in flight.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

EXECUTORS = ("local", "ray")


class ExecutorError(RuntimeError):
    """The executor could not start (Ray missing, a cluster that cannot be reached)."""


class CellError(RuntimeError):
    """A cell raised on a Ray worker (or its worker died more often than the retries allow)."""


@dataclass
class LocalExecutor:
    """Every cell in this process, in order."""

    name = "local"

    def map(self, fn: Callable[[Any], Any], cells: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        for cell in cells:
            yield cell, fn(cell)

    def close(self) -> None:
        pass


@dataclass
class RayExecutor:
    """Each cell a Ray task with ``threads`` CPUs and ``gpus`` GPUs, at most ``workers`` in flight."""

    workers: int = 2
    threads: int = 1
    gpus: float = 0.0
    address: str | None = None
    retries: int = 3
    name = "ray"
    _started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:  # at once, before a run folder exists: ray.init retries an address nobody answers for minutes
            _check_reachable(address)

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'ray>=2.9' (the project's setup installs it)"
                                ) from None
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            on_sigterm = signal.getsignal(signal.SIGTERM)
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.workers * self.threads, num_gpus=None if self.gpus else 0,
                             include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise ExecutorError(f"cannot start or join {where}: {err}") from None
            finally:
                if on_sigterm is not None and threading.current_thread() is threading.main_thread():
                    # ray.init makes SIGTERM exit the driver (a run then reads as failed); keep the run's
                    # own handler, which stops it as interrupted and resumable, like Ctrl-C
                    signal.signal(signal.SIGTERM, on_sigterm)
            self._started = True
        return ray

    def map(self, fn: Callable[[Any], Any], cells: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        waiting = list(cells)[::-1]
        if not waiting:  # every cell finished earlier: no cluster to start or join
            return
        ray = self._connect()
        task = ray.remote(_run_cell).options(num_cpus=self.threads, num_gpus=self.gpus, max_retries=self.retries)
        in_flight: dict[Any, Any] = {}
        shared = ray.put(fn)  # the function and what it closes over, sent to the object store once
        try:
            while waiting or in_flight:
                while waiting and len(in_flight) < self.workers:
                    cell = waiting.pop()
                    in_flight[task.remote(shared, cell, self.threads)] = cell
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                cell = in_flight.pop(ready[0])
                try:
                    record = ray.get(ready[0])
                except ray.exceptions.RayError as err:  # its text is the whole remote traceback
                    cause = getattr(err, "cause", None) or err
                    raise CellError(f"cell {getattr(cell, 'key', cell)} failed on Ray: {type(cause).__name__}: "
                                    f"{str(cause).splitlines()[-1] if str(cause) else ''}") from err
                yield cell, record
        finally:
            if in_flight:  # interrupted or failed: stop what still runs before the run lets go of its folder
                if self._started:
                    # our own connection: ending it stops the job's tasks. Cancelling them one by one
                    # races Ray's bookkeeping (a task cancelled as its worker replies aborts the driver
                    # with "Tried to complete task that was not pending": exit 1 instead of the
                    # interrupted run's 130, about one SIGTERM in six on Ray 2.60)
                    self.close()
                else:  # a Ray session someone else opened, which must live on
                    for ref in in_flight:
                        ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise :class:`ExecutorError` if nothing answers at a ``host:port`` cluster address."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}; start it "
                            "(`ray start --head` on its head node) or fix --address / RAY_ADDRESS") from None


def _run_cell(fn: Callable[[Any], Any], cell: Any, threads: int) -> Any:
    """A cell inside a Ray worker, at the task's thread count."""
    import torch

    torch.set_num_threads(threads)
    return fn(cell)


def make_executor(kind: str, *, workers: int | None = None, threads: int = 1, gpus: float = 0.0,
                  address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor ``kind`` (``local`` or ``ray``) with its settings checked."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    if kind == "local":
        if workers not in (None, 1) or address or gpus:
            raise ExecutorError("--workers, --address and --gpus-per-cell go with --executor ray")
        return LocalExecutor()
    if workers is not None and workers < 1:
        raise ExecutorError(f"--workers must be at least 1, got {workers}")
    if gpus < 0:
        raise ExecutorError(f"--gpus-per-cell must be ≥ 0, got {gpus}")
    default_workers = max(1, (os.cpu_count() or 1) // max(1, threads))
    return RayExecutor(workers=workers or default_workers, threads=threads, gpus=gpus, address=address)
