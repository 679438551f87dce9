"""Where a model came from: hardware, library versions, git commit, time."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

# Instruction sets that decide how fast training and the served precisions run (app/cpu.py
# keeps the same list: training/ and app/ share no code, convention 1 of STYLE.md).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description() -> dict:
    """The processor's name, family and model, core count and the ``ISA_FLAGS`` it has."""
    model = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                if info:
                    break  # the first processor's block is enough
                continue
            info.setdefault(key.strip(), value.strip())
    model = info.get("model name", model)
    described = {"cpu": model, "cores": os.cpu_count()}
    if "cpu family" in info:
        described["family_model"] = f"{info['cpu family']}/{info.get('model', '?')}"
    if "flags" in info:
        flags = set(info["flags"].split())
        described["isa"] = [f for f in ISA_FLAGS if f in flags]
    return described


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for dist in ("tensorflow", "keras", "numpy", "pillow", "jax"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()
