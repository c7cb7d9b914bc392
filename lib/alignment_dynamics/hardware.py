"""What this machine is, and the forward-pass dtype that follows from it: the one place that resolves
``dtype="auto"``.

bfloat16 is chosen only where the hardware runs it natively *and faster than float32*: a CUDA device
that supports it, or a CPU with AMX-BF16 tile instructions (3-4x faster than float32 on a 2-core Xeon
with AMX). Everywhere else it is float32:

* AVX2-only x86 CPUs, Apple and other ARM CPUs, an unknown CPU: bfloat16 would be emulated (measured
  ~45x slower than float32 on a 2-core AMD EPYC with AVX2 only);
* a CPU with AVX512-BF16 but no AMX: bfloat16 is native (dot-product instructions), but whether it is
  faster depends on the chip: on a 2-core Intel Xeon of that kind our batched SmolLM2 embedding ran at
  17.0 prompts/s in bfloat16 against 26.4 in float32, on a 2-core AMD EPYC (Zen 4) at 12.7 against 6.7
  [project, measured, December 2026]. There :func:`bf16_speedup` times a small transformer block in both
  dtypes once per machine (kept in the user cache) and bfloat16 is chosen when it is at least
  :data:`BF16_MIN_SPEEDUP` times as fast.

``ALIGNMENT_DYNAMICS_DTYPE`` (``float32`` or ``bfloat16``) overrides the automatic choice for a whole
run, e.g. to check that verdicts do not depend on the dtype. Setting ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512 machine makes PyTorch behave like an AVX2-only CPU (bfloat16
emulated); ``auto`` then resolves to float32 there too.

This module imports nothing from the package (a leaf), so every other module may use it.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

ENV_DTYPE = "ALIGNMENT_DYNAMICS_DTYPE"
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}
# CPU flags that matter for the dtype and the kernels (as /proc/cpuinfo spells them).
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # bf16 arithmetic in hardware
FAST_BF16_FLAGS = ("amx_bf16",)  # ... and faster than float32 (what "auto" needs)
# ISA caps that forbid the bf16 instructions (oneDNN: anything below AVX512_CORE_BF16).
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX",
                     "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "DEFAULT", "ALL", "")


class DtypeError(ValueError):
    """An unknown dtype name (the message lists the valid ones)."""


def cpuinfo_text() -> str:
    """The text of ``/proc/cpuinfo`` ('' where there is none, e.g. macOS or Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name, e.g. 'Intel(R) Xeon(R) Processor' or 'AMD EPYC 7B13'."""
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo_text(), flags=re.M)
    if m:
        return m.group(1).strip()
    if platform.system() == "Darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (first processor of ``/proc/cpuinfo``; empty where unknown)."""
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", cpuinfo_text(), flags=re.M)
    return set(m.group(1).split()) if m else set()


def _isa_capped() -> str | None:
    """Why PyTorch may not use the bf16 instructions although the CPU has them (None: it may)."""
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if aten and aten not in ("avx512", "default"):
        return f"ATEN_CPU_CAPABILITY={aten}"
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if onednn not in _ONEDNN_BF16_ISAS:
        return f"ONEDNN_MAX_CPU_ISA={onednn}"
    return None


def native_bf16(device: Any = None) -> tuple[bool, str]:
    """Whether bfloat16 arithmetic is native on ``device`` (None: CUDA when present, else the CPU), and why."""
    dev = _device(device)
    if dev.startswith("cuda"):
        import torch

        ok = bool(torch.cuda.is_bf16_supported())
        return ok, f"CUDA device {torch.cuda.get_device_name(dev)}: bf16 {'supported' if ok else 'not supported'}"
    flags = cpu_flags()
    have = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if not have:
        return False, f"CPU without {' or '.join(NATIVE_BF16_FLAGS)}: bfloat16 would be emulated"
    capped = _isa_capped()
    if capped:
        return False, f"CPU has {', '.join(have)} but {capped} forbids it: bfloat16 would be emulated"
    return True, f"CPU with {', '.join(have)}"


#: A CPU with native bfloat16 but no AMX uses bfloat16 only when the probe measures at least this speed-up.
BF16_MIN_SPEEDUP = 1.25


def fast_bf16(device: Any = None) -> tuple[bool, str]:
    """Whether bfloat16 is native *and* faster than float32 on ``device``, and why: a CUDA device that
    supports it, a CPU with AMX-BF16, or a CPU with native bfloat16 but no AMX where
    :func:`bf16_speedup` measures at least :data:`BF16_MIN_SPEEDUP` (an Intel Xeon of that kind ran our
    embedding slower in bfloat16, an AMD EPYC with AVX512-BF16 1.9x faster: the flags cannot tell)."""
    native, why = native_bf16(device)
    if not native or _device(device).startswith("cuda"):
        return native, why
    if any(f in cpu_flags() for f in FAST_BF16_FLAGS):
        return True, why
    speedup = bf16_speedup()
    fast = speedup >= BF16_MIN_SPEEDUP
    return fast, (f"{why}, no AMX; a transformer block measured {speedup:.2f}x as fast in bfloat16 as in float32 "
                  f"on this machine ({'>=' if fast else '<'} {BF16_MIN_SPEEDUP}x needed)")


def _probe_key() -> str:
    import hashlib

    import torch

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    text = "|".join([cpu_model(), " ".join(flags), torch.__version__, str(torch.get_num_threads())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _probe_path() -> Path:
    """Where the probe's record lives: the platform's user cache folder (``platformdirs``; on Linux
    ``$XDG_CACHE_HOME`` or ``~/.cache``), not ``$ALIGNMENT_DYNAMICS_CACHE``: it describes the machine,
    and a run with a fresh content cache (a test, a cold build) must make the same choice as the others."""
    import platformdirs

    base = Path(platformdirs.user_cache_dir("alignment_dynamics"))
    return base / "hardware" / f"bf16-probe-{_probe_key()}.json"


_PROBED: dict[str, float] = {}


def bf16_speedup(*, refresh: bool = False) -> float:
    """float32 time / bfloat16 time of one small transformer block (RMS norm, attention, gated MLP; the
    shapes of SmolLM2's layers) on this CPU, measured once per CPU, flags, PyTorch version and thread
    count and kept in the user cache (``alignment_dynamics/hardware/bf16-probe-<key>.json``), so every
    run on a machine makes the same choice. A missing or unreadable record is measured again (about
    two seconds); where the cache cannot be written the value is kept for this process only."""
    import json

    path = _probe_path()
    if not refresh:
        if str(path) in _PROBED:
            return _PROBED[str(path)]
        try:
            value = float(json.loads(path.read_text())["speedup"])
            if value > 0 and value == value and value != float("inf"):
                _PROBED[str(path)] = value
                return value
        except (OSError, ValueError, KeyError, TypeError):
            pass
    t32, t16 = _time_blocks()
    speedup = t32 / t16
    _PROBED[str(path)] = speedup
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"speedup": speedup, "float32_s": t32, "bfloat16_s": t16, "cpu": cpu_model()}))
        os.replace(tmp, path)
    except OSError:
        pass
    return speedup


def _time_blocks(*, tokens: int = 32, rows: int = 8, d: int = 576, ff: int = 1536, heads: int = 9,
                 repeats: int = 7) -> tuple[float, float]:
    """The best of ``repeats`` timings (seconds) of one pass through a random transformer block in float32
    and in bfloat16, the two interleaved so that a load that comes and goes touches both alike."""
    import time

    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    w32 = {k: torch.randn(*shape, generator=g) / shape[0] ** 0.5
           for k, shape in {"qkv": (d, 3 * d), "o": (d, d), "up": (d, 2 * ff), "down": (ff, d)}.items()}
    x32 = torch.randn(rows, tokens, d, generator=g)
    cases = {"float32": (w32, x32), "bfloat16": ({k: v.bfloat16() for k, v in w32.items()}, x32.bfloat16())}

    def block(w, x):
        h = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype)
        q, k, v = (h @ w["qkv"]).split(d, dim=-1)
        q, k, v = (t.view(rows, tokens, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(rows, tokens, d)
        x = x + a @ w["o"]
        gate, up = (x @ w["up"]).split(ff, dim=-1)
        return x + (F.silu(gate) * up) @ w["down"]

    best = {name: float("inf") for name in cases}
    with torch.inference_mode():
        for w, x in cases.values():
            block(w, x)  # warm-up (kernel selection)
        for _ in range(repeats):
            for name, (w, x) in cases.items():
                t0 = time.perf_counter()
                block(w, x)
                best[name] = min(best[name], time.perf_counter() - t0)
    return best["float32"], best["bfloat16"]


def auto_dtype(device: Any = None) -> str:
    """``"bfloat16"`` where it is native and faster than float32 on ``device`` (:func:`fast_bf16`), else
    ``"float32"``; ``ALIGNMENT_DYNAMICS_DTYPE`` overrides the choice."""
    forced = os.environ.get(ENV_DTYPE, "").strip()
    if forced:
        name = DTYPE_NAMES.get(forced.lower())
        if name not in ("float32", "bfloat16"):
            raise DtypeError(f"{ENV_DTYPE}={forced!r} is not a dtype; valid: 'float32', 'bfloat16' (or unset it)")
        return name
    return "bfloat16" if fast_bf16(device)[0] else "float32"


def resolve_dtype(dtype: Any, device: Any = None) -> str:
    """The canonical name of a dtype (``"float32"``, ``"bfloat16"``, ``"float16"``); ``"auto"`` resolves
    through :func:`auto_dtype`, ``None`` means float32. A torch dtype is accepted too."""
    if dtype is None:
        return "float32"
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        return auto_dtype(device)
    key = str(dtype).removeprefix("torch.") if not isinstance(dtype, str) else dtype.strip().lower()
    if key not in DTYPE_NAMES:
        import difflib

        close = difflib.get_close_matches(str(dtype), list(DTYPE_NAMES) + ["auto"], n=2, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DtypeError(f"unknown dtype {dtype!r}; valid: 'auto', 'float32', 'bfloat16', 'float16' "
                         f"(or the torch dtypes).{hint}")
    return DTYPE_NAMES[key]


def _device(device: Any = None) -> str:
    if device is not None:
        return str(device)
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


def summary(device: Any = None) -> dict[str, Any]:
    """The machine as the build report and the reproducibility page show it: CPU model, its relevant
    flags, cores, PyTorch's threads and CPU capability, whether bf16 is native and the auto dtype."""
    import torch

    flags = cpu_flags()
    native, _ = native_bf16(device)
    fast, why = fast_bf16(device)
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": {f: (f in flags) for f in RELEVANT_FLAGS},
        "device": _device(device),
        "native_bf16": native,
        "fast_bf16": fast,
        "native_bf16_reason": why,
        "dtype_override": os.environ.get(ENV_DTYPE) or None,
        "auto_dtype": auto_dtype(device),
    }


def summary_table(s: dict[str, Any] | None = None):
    """:func:`summary` as a two-column DataFrame (what, value) for the reproducibility page."""
    import pandas as pd

    s = s if s is not None else summary()
    flags = s.get("flags") or {}
    rows = [("CPU", s.get("cpu")), ("architecture", f"{s.get('machine')} ({s.get('system')})"),
            ("cores / PyTorch threads", f"{s.get('cores')} / {s.get('torch_threads')}"),
            ("PyTorch CPU capability", s.get("torch_cpu_capability")),
            ("relevant CPU flags", ", ".join(f for f, on in flags.items() if on) or "none found"),
            ("native bfloat16", "yes" if s.get("native_bf16") else "no"),
            ("bfloat16 faster than float32", f"{'yes' if s.get('fast_bf16') else 'no'}: {s.get('native_bf16_reason')}"),
            ("dtype='auto' means", s.get("auto_dtype")
             + (f" (forced by {ENV_DTYPE}={s['dtype_override']})" if s.get("dtype_override") else ""))]
    return pd.DataFrame(rows, columns=["what", "value"])
