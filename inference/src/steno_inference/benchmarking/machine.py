"""What a benchmark ran on: GPU names and memory from torch and nvidia-smi, software versions."""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from typing import Any

import torch

SMI_FIELDS = "name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit"
COPY_BYTES = 4 << 30  # a copy this large runs far past launch overhead and the L2 cache
COPY_REPEATS = 10


def describe(device: torch.device) -> dict[str, Any]:
    """Torch's view of the device plus nvidia-smi's, when there is one."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host_cpus": _cpu_count(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # the runner itself needs no transformers
        pass
    if device.type != "cuda":
        info["device"] = "cpu"
        return info
    props = torch.cuda.get_device_properties(device)
    info.update(
        device=props.name,
        gpu_count=torch.cuda.device_count(),
        capability=f"{props.major}.{props.minor}",
        multiprocessors=props.multi_processor_count,
        memory_gib=round(props.total_memory / 2**30, 1),
        flash_attn=_flash_attn_version(),
    )
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, check=False, timeout=30)
        info["nvidia_smi"] = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return info


def copy_bandwidth_gbs(device: torch.device) -> float:
    """Device-to-device copy rate, bytes read plus written: the decoder's ceiling."""
    if device.type != "cuda":
        return 0.0
    source = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device)
    source.random_()
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(COPY_REPEATS):
        target.copy_(source)
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    del source, target
    torch.cuda.empty_cache()
    return 2 * COPY_BYTES * COPY_REPEATS / elapsed / 1e9


def _flash_attn_version() -> str | None:
    try:
        import flash_attn  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(getattr(flash_attn, "__version__", "unknown"))


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0
