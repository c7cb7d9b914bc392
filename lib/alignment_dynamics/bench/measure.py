"""Measurement helpers of the benchmarks: wall times (median and quantiles of repeats), the peak
resident memory a call adds (Linux), the machine and package versions, and progress on standard error.
"""

from __future__ import annotations

import ctypes
import datetime
import gc
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch


def log(msg: str) -> None:
    """Progress of a benchmark, on standard error (standard output may carry the JSON).
    """
    print(msg, file=sys.stderr, flush=True)


def _status_bytes(key: str) -> int:
    m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) * 1024 if m else -1


def cpu_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak resident memory that ``fn()`` adds above what is resident before it (Linux), or None.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``), so only ``fn``'s peak counts.
    Large tensors are mmapped by the allocator and returned on free, so earlier runs do not hide it.
    """
    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_bytes("VmRSS")
        fn()
        return max(0, _status_bytes("VmHWM") - before)
    except OSError:
        return None


def times(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Wall times of ``repeats`` calls of ``fn()``: median, 20 % and 80 % quantiles and minimum, seconds.
    """
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    q = lambda p: ts[min(len(ts) - 1, int(p * len(ts)))]  # noqa: E731
    return {"median_s": statistics.median(ts), "p20_s": q(0.2), "p80_s": q(0.8), "min_s": ts[0], "repeats": repeats}


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for key, dist in (("triton", "triton"), ("numba", "numba"), ("liger_kernel", "liger-kernel"), ("numpy", "numpy")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "absent"
    return out


def meta(size: str) -> dict[str, Any]:
    """What a benchmark's JSON says about its run: date, ``size``, the CPU, torch's threads, versions.
    """
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "size": size,
            "cpu": cpu, "torch_threads": torch.get_num_threads(), "versions": _versions()}
