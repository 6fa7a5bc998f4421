"""The C allocator, set so that a large delivery's buffers go back to the system once freed.

glibc serves a request of at least ``M_MMAP_THRESHOLD`` bytes with a mapping of its own and
unmaps it on free; smaller requests come from heaps (one arena per thread that allocates), whose
freed space stays in the process. The threshold starts at 128 KiB, but glibc raises it to the
size of every mapped block that is freed, up to 32 MiB. After the first large delivery, then,
its body, the compressed and sealed copies and the packed vectors (each up to tens of MB)
all came from heaps: the event loop's thread, the thread pool that parses large bodies and the
SQLite writer each kept their own peak, and the process never gave it back.

:func:`return_large_blocks` fixes the threshold (which turns the adjustment off), so every
block of :data:`MMAP_THRESHOLD_BYTES` or more is mapped and unmapped on its own. Measured on the
2-core development machine, SQLite, three 21.6 MB deliveries (bench's ``large``), peak RSS:
the worker 306 -> 236-239 MB, the face process 195 -> 168 MB. Blocks under 1 MiB (a typical
delivery's whole body is 335 KB) still come from the heaps, so the small and typical payloads
pay no extra page faults.

Only ``serve``'s processes call it (:func:`service.app.app_from_env` and the face process);
an operator's own ``MALLOC_MMAP_THRESHOLD_`` (or ``GLIBC_TUNABLES`` naming the threshold) is
left as it is. On a C library without ``mallopt`` (musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os

import structlog

log = structlog.get_logger("service.allocator")

MMAP_THRESHOLD_BYTES = 1024 * 1024
"""Blocks of this size or more are mapped on their own and unmapped when freed."""
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def _operator_chose() -> bool:
    """Whether the environment already sets glibc's mmap threshold."""
    return ("MALLOC_MMAP_THRESHOLD_" in os.environ
            or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""))


def return_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix this process's mmap threshold at ``threshold`` bytes; whether it was set."""
    if _operator_chose():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: bool = mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    if not done:
        log.warning("allocator.threshold_refused", threshold=threshold)
    return done
