"""The machine a bench ran on: CPU, cores, memory and the versions of the numeric libraries."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import duckdb
import numba
import numpy as np


def machine() -> dict:
    """Return the CPU model, cores available, total memory in GB and library versions."""
    return {
        "cpu": _cpu_model(),
        # "AMD EPYC" alone names several generations: two such machines ran ALS 2.5 times apart.
        "cpu_family_model": _cpu_field("cpu family") + "/" + _cpu_field("model"),
        "cores": len(os.sched_getaffinity(0)),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "duckdb": duckdb.__version__,
    }


def core_check_seconds(iterations: int = 5_000_000) -> list[float]:
    """Time a fixed pure-Python loop on each core available, one core at a time.

    On a virtual machine whose cores other guests share, a core that takes much longer than the
    others, or than at another time, marks figures that other load slowed down.
    """
    cores = sorted(os.sched_getaffinity(0))
    seconds = []
    try:
        for core in cores:
            os.sched_setaffinity(0, {core})
            started = time.perf_counter()
            total = 0
            for value in range(iterations):
                total += value
            seconds.append(round(time.perf_counter() - started, 3))
    finally:
        os.sched_setaffinity(0, cores)
    return seconds


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_field(name: str) -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return "unknown"


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:
        # numba picks its layer when the first parallel kernel runs.
        return "not started"
