"""Host memory: keep the CPU tensors' freed memory for reuse, as the CUDA caching allocator does on the GPU.

PyTorch's CPU allocator is the C library's ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MiB by default) with a fresh ``mmap`` and hands it back with ``munmap`` on free, so each large
tensor of a training step starts as untouched pages that the kernel faults in and zeroes on first write,
every step again. At L = 2000, batch 256 and 128 columns one activation is 262 MB, and an out-of-place add
of two of them took 124 ms, against 19 ms once the memory is reused (2 cores, glibc 2.36); a TIN or DIN
training step at L = 2000 on that machine ran 2-3.5x faster with reuse (``benchmarks/``, README "Performance").

``cached`` (the default of ``train.host_memory``) tells glibc (``mallopt``) to serve large blocks from its
heap too (M_MMAP_MAX = 0) and never to trim the heap (M_TRIM_THRESHOLD = -1), so freed blocks are reused by
the next step. The cost is the CUDA caching allocator's: the process keeps host memory it freed, and since
PyTorch allocates 64-byte aligned blocks (``posix_memalign``), a freed block is not always reused by the next
request of the same size and the heap settles above the working set: whole training runs at L = 2000, batch
256 peaked up to 48% higher (DIN 2.3 GiB instead of 1.5; README "Every model at L = 2000"). ``system``
leaves ``malloc`` as configured by the environment (e.g. ``MALLOC_*`` variables, or jemalloc / tcmalloc
through ``LD_PRELOAD``). Elsewhere than glibc, ``cached`` does nothing and says so once in the log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

CHOICES = ("cached", "system")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h parameter numbers

_applied = False


def configure(mode: str) -> bool:
    """Apply ``train.host_memory``; returns True when glibc accepted the caching settings.

    Settings apply to allocations made afterwards (earlier mmap'ed blocks are unaffected) and to processes
    forked later (data loader workers).

    Raises:
        ValueError: ``mode`` is not one of :data:`CHOICES`.
    """
    global _applied
    if mode not in CHOICES:
        raise ValueError(f"train.host_memory: expected one of {', '.join(CHOICES)}, got {mode!r}")
    if mode == "system":
        return False
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        log.info("train.host_memory=cached: not a glibc system, host malloc left as it is")
        return False
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    if not _applied:
        log.warning("train.host_memory=cached: glibc refused mallopt; host malloc left as it is")
    return _applied


def _glibc():
    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
        return libc
    except (OSError, AttributeError):
        return None
