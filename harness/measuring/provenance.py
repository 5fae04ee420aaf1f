"""Where a row was measured: machine, software, GPU state, code version, command line."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import torch

from harness import paths
from harness.measuring import nvml as nv


@cache
def git_sha() -> str:
    """The attnbench checkout's commit, '+dirty' when it has uncommitted changes; '' for an
    installed wheel (never the commit of a repository that merely encloses site-packages)."""
    repo = paths.checkout()
    if repo is None:
        return ""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + ("+dirty" if dirty.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def host() -> dict[str, Any]:
    """Provenance that needs no device: software, CPU, code version, time."""
    return {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "cpu_model": cpu_model(),
        "hostname": socket.gethostname(),
        "git_sha": git_sha(),
        "attnbench_version": paths.version(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
    }


def device(dev: torch.device, uuid: str | None = None, nvml: Any = None) -> dict[str, Any]:
    """Device name and, on a GPU, UUID (NVML's, 'MIG-' for a MIG slice), driver, math flags and
    what NVML can read right now."""
    if dev.type != "cuda":
        return {"device_name": cpu_model(), "device_uuid": ""}
    info: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(dev),
        "device_uuid": uuid or f"GPU-{nv.cuda_uuid(dev)}",
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_version": torch.backends.cudnn.version() or "",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    info.update(_nvml_state(info["device_uuid"], nvml))
    return info


def _nvml_state(uuid: str, nvml: Any) -> dict[str, Any]:
    """What NVML can read of the GPU now; a reading it cannot give is left empty, never guessed."""
    try:
        lib = nv.load(nvml)
        handle = nv.handle(lib, uuid)
    except nv.Unavailable:
        return {}
    readings = {
        "driver_version": lambda: nv.text(lib.nvmlSystemGetDriverVersion()),
        "power_limit_w": lambda: lib.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3,
        "sm_clock_mhz": lambda: lib.nvmlDeviceGetClockInfo(handle, lib.NVML_CLOCK_SM),
        "mem_clock_mhz": lambda: lib.nvmlDeviceGetClockInfo(handle, lib.NVML_CLOCK_MEM),
        "temperature_c": lambda: lib.nvmlDeviceGetTemperature(handle, lib.NVML_TEMPERATURE_GPU),
    }
    state = {key: nv.read(fn) for key, fn in readings.items()}
    return {k: None if nv.failed(v) else v for k, v in state.items()}
