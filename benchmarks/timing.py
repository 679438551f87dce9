"""The timing loop the benchmark scripts share."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def time_calls(
    call: Callable[[np.ndarray], object],
    x: np.ndarray,
    seconds: float,
    warmup: int = 3,
    min_calls: int = 5,
) -> list[float]:
    """Seconds taken by each ``call(x)``, after ``warmup`` untimed calls, for ``seconds``."""
    for _ in range(warmup):
        call(x)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        t = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - t)
    return times
