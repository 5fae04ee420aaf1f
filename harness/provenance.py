"""Where a row was measured: machine, software, GPU state, code version, command line."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent


def git_sha() -> str:
    """The harness checkout's commit, '+dirty' when it has uncommitted changes, '' outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
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
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "git_sha": git_sha(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
    }


def device(dev: torch.device, nvml: Any = None) -> dict[str, Any]:
    """Device name and, on a GPU, UUID, driver, math flags and what NVML can read right now."""
    if dev.type != "cuda":
        return {"device_name": cpu_model(), "device_uuid": ""}
    from .energy import gpu_uuid

    info: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(dev),
        "device_uuid": gpu_uuid(dev),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_version": torch.backends.cudnn.version() or "",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    info.update(_nvml_state(info["device_uuid"], nvml))
    return info


def _nvml_state(uuid: str, nvml: Any) -> dict[str, Any]:
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return {}
    readings = {
        "driver_version": lambda h: nvml.nvmlSystemGetDriverVersion(),
        "power_limit_w": lambda h: nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3,
        "sm_clock_mhz": lambda h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "mem_clock_mhz": lambda h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM),
        "temperature_c": lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
        "gpu_processes": lambda h: len(nvml.nvmlDeviceGetComputeRunningProcesses(h)),
    }
    try:
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:
        return {}
    state = {}
    for key, read in readings.items():
        try:
            value = read(handle)
            state[key] = value.decode() if isinstance(value, bytes) else value
        except Exception:
            state[key] = ""  # not readable on this GPU or driver: left empty, never guessed
    return state
