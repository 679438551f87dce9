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
# The cyclic collector walks its youngest generation once this many more containers were
# allocated than freed (Python's default: 700); see ``collect_young_objects_less_often``.
YOUNG_COLLECTION_THRESHOLD = 10_000


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


def collect_young_objects_less_often() -> None:
    """Start a collection of the youngest generation after ``YOUNG_COLLECTION_THRESHOLD`` net
    container allocations instead of Python's 700 (called once the model is warmed up). The
    containers of the requests in flight (scopes, headers, closures, futures: a few thousand
    under load) kept crossing 700, and each collection walked them while they were still alive,
    moving them to older generations to be walked again: 324 young and 29 middle collections
    in 2,785 requests under 32 connections, 0.0165 ms of the event loop's time a request; at
    10,000 none in 2,833 requests under 32 connections, and 2 young ones in 3,089 under 128
    (``docs/benchmarks.md``, ``/var/tmp/cifar10-runs/prof/gc_tree.sh``), as a request's
    containers are freed by their reference counts.
    What only the cyclic collector can free (a reference cycle) counts towards the threshold
    and is collected later than at 700; a request is not to leave one holding its body (the
    batcher hands errors over as values, ``tests/app/test_batcher_faults.py``)."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


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
