"""What this CPU can compute fast: the flags that decide bf16 and int8 serving."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# The instruction sets that matter for this model's inference, in the report's order.
RELEVANT_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@lru_cache
def cpu_flags() -> frozenset[str]:
    """The flags of the first processor in ``/proc/cpuinfo`` (empty off Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return frozenset()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_fast_bf16() -> bool:
    """bf16 matrix instructions: AVX512_BF16 (Zen 4, Cooper Lake+) or AMX (Sapphire Rapids+)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_report() -> dict:
    """Model name, family/model numbers, cores and the relevant flags, for logs and reports."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                info["cpu"] = value.strip()
            elif key in ("cpu family", "model") and key.replace(" ", "_") not in info:
                info[key.replace(" ", "_")] = value.strip()
            elif key == "flags":
                break
    info["flags"] = [f for f in RELEVANT_FLAGS if f in cpu_flags()]
    return info
