"""glibc ``malloc`` settings for CPU training: keep freed memory for the next step.

PyTorch's CPU tensors are plain ``malloc``/``free`` blocks, with no caching allocator in between.
glibc's defaults return memory to the kernel eagerly: a block of at least ``M_MMAP_THRESHOLD``
(128 KiB to start with, then moved up to the largest block freed so far) is a fresh ``mmap``,
and the top of the heap beyond ``M_TRIM_THRESHOLD`` is handed back at ``free``.  A training
step frees its activations at the end of ``backward`` and allocates them again in the next
forward, so with the defaults each step can touch fresh pages, and every first touch of a page
is a page fault that the kernel serves by zeroing it.  Fixing both thresholds keeps the freed
blocks in the heap for the next step.

Measured (``benchmarks/run.py --workloads W5``, one thread, this project's 2-core CPU; the
stacked K-component MixtureOfFlows, whose (K, 512, 64) activations are 640 KiB each): with the
defaults, K = 5 took 25.9 ms a step at 717-3,151 minor page faults a step and K = 10 42.7 ms at
3,700; with :func:`tune_cpu_allocator`, 20.3 ms at 16 faults and 35.7 ms at none.  See
docs/benchmarks.md.

The settings are process-wide and stay until the process exits (``mallopt`` has no undo that
restores glibc's adaptive thresholds).  The cost: up to ``trim_threshold`` bytes of freed memory
stay mapped in the process instead of going back to the system.  The ``Trainer`` applies them
on CPU unless ``TrainConfig(tune_allocator=False)``; other code calls the function itself.  On a
C library other than glibc (musl, macOS, Windows) nothing is changed and the function returns
False.
"""

from __future__ import annotations

import ctypes

from ._checks import check_int

__all__ = ["tune_cpu_allocator", "allocator_tuned"]

# glibc's malloc.h: mallopt parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
_MMAP_MAX = 32 * 1024 * 1024

_applied: dict[str, int] | None = None


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it exports ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # Windows: no handle to the running process's symbols
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    return libc


def tune_cpu_allocator(mmap_threshold: int = _MMAP_MAX, trim_threshold: int = 1 << 30) -> bool:
    """Fix glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (see the module docstring).

    Args:
        mmap_threshold: blocks of at least this many bytes are ``mmap``-ed on their own (and
            unmapped at ``free``); smaller ones come from the heap.  At most 32 MiB (glibc's
            limit on 64-bit systems); the default is that limit.
        trim_threshold: free memory at the top of the heap is returned to the system only
            beyond this many bytes (default 1 GiB).

    Returns:
        True if both settings were applied; False where the C library is not glibc (nothing
        is changed then).
    """
    global _applied
    check_int("mmap_threshold", mmap_threshold, 1)
    check_int("trim_threshold", trim_threshold, 1)
    if mmap_threshold > _MMAP_MAX:
        raise ValueError(
            f"mmap_threshold: expected at most {_MMAP_MAX} bytes (glibc's limit), "
            f"got {mmap_threshold}"
        )
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    trim = min(trim_threshold, 2**31 - 1)  # mallopt takes a C int
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, trim)) and ok
    if ok:
        _applied = {"mmap_threshold": mmap_threshold, "trim_threshold": trim}
    return ok


def allocator_tuned() -> dict[str, int] | None:
    """The settings :func:`tune_cpu_allocator` applied in this process, or None."""
    return None if _applied is None else dict(_applied)
