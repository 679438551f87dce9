"""Memory settings for a server whose requests come and go: the C allocator and Python's
cyclic garbage collector.


glibc's ``malloc`` raises its mmap threshold each time a large block is freed (up to 32 MiB),
so that the next large blocks (a request body, an image being decoded) come from the heap of
whichever thread allocated them, which keeps the memory after they are freed: under a flood of
large requests the server's resident memory grew to 1.7 GB and stayed there. A fixed threshold
of 1 MiB keeps every larger block in its own mapping, returned to the system when freed:
measured by ``tests/e2e/test_memory_bounds.py``, a peak of 1,686 MiB became 573 MiB (542 MiB
at glibc's starting value, 128 KiB, which would also map the model's and the batcher's
mid-sized buffers anew on every call). Everything smaller is allocated as before.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BLOCK_BYTES = 1024 * 1024


def return_large_blocks_to_the_system() -> bool:
    """Fix glibc's mmap threshold at ``LARGE_BLOCK_BYTES`` (unless ``MALLOC_MMAP_THRESHOLD_``
    is set, which glibc reads itself); ``False`` where the C library is not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set
        return False
    if mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; large blocks stay in the heap")
        return False
    return True


def freeze_long_lived_objects() -> None:
    """Keep the cyclic garbage collector off what lives as long as the server (``gc.freeze``):
    the app, its routes and schemas, the libraries, the model's Python objects. Every request
    allocates containers, and every few seconds under load a full collection walked all of
    those (about 93,000 objects, 48 ms each, measured: 0.05 ms of the event loop's time per
    request, of 0.38); frozen, a collection walks only what came after. Called once a model is
    warmed up: everything is unfrozen and collected first, so that a model a reload replaced
    is freed (a frozen object in a reference cycle would never be)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
