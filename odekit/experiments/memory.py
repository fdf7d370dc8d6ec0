"""Peak memory of one piece of work (a training iteration), on the GPU or on a Linux CPU.

On CUDA it is the allocator's peak above what was allocated before. On the CPU, where torch
allocates with ``malloc``, freed memory is first handed back to the system (``malloc_trim``) and the
kernel's high-water mark of the resident set is reset (``/proc/self/clear_refs``), so the peak
resident set during the work minus the resident set before it is the work's own peak. Elsewhere
(no Linux ``/proc``) nothing is measured and the peak is ``None``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator
from pathlib import Path

import torch

_PROC = Path("/proc/self")


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def _status_kib(field: str) -> int | None:
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """``with peak.measure(): …`` then ``peak.megabytes`` (``None`` where it cannot be measured)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.megabytes: float | None = None

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.megabytes = (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
            return
        before = self._reset_cpu()
        yield self
        peak = _status_kib("VmHWM")
        self.megabytes = None if before is None or peak is None else max(0, peak - before) / 1024

    @staticmethod
    def _reset_cpu() -> int | None:
        """Hand freed memory back, reset the high-water mark; the resident set now (KiB), or None."""
        if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
            _LIBC.malloc_trim(0)
        try:
            (_PROC / "clear_refs").write_text("5")  # 5: reset the peak resident set size to the current one
        except OSError:
            return None
        return _status_kib("VmRSS")
