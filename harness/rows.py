"""The result row: its documented columns, its atomic write, and reading rows back."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

ROW_FILE = "result.json"
SCHEMA_VERSION = 1

# column -> meaning. The README's column table is generated from this dict.
COLUMNS: dict[str, str] = {
    "attention": "mechanism name from the attention_zoo registry",
    "attention_options": "the mechanism's options as given (JSON object)",
    "model": "model preset (paper_4l, paper_24l, small)",
    "depth": "transformer blocks",
    "dim": "embedding width",
    "heads": "attention heads",
    "resolution": "image width in pixels (and height, unless `height` differs)",
    "height": "image height in pixels",
    "tokens": "patch tokens per image",
    "batch_size": "images per step",
    "mode": "infer (forward under inference_mode) or train (forward + backward + AdamW step)",
    "dtype": "float32, bfloat16 or float16 (infer: model and input cast; train: autocast)",
    "device": "torch device the cell ran on (cpu, cuda:N)",
    "compile": "whether the model went through torch.compile",
    "tf32": "TF32 matmuls and convolutions allowed",
    "status": "ok, oom, skipped_oom or error",
    "error": "why the cell is not ok (empty when ok)",
    "params": "trainable parameters of the model at this resolution",
    "macs": "multiply-accumulates of one forward per image (contractions only; fvcore)",
    "flops": "2 x macs",
    "latency_ms": "median time of one step (one batch), ms",
    "latency_ms_p10": "10th percentile step time, ms",
    "latency_ms_p90": "90th percentile step time, ms",
    "iters": "steps in the timed window",
    "window_s": "wall seconds of the timed window (energy is read over the same window)",
    "throughput_img_s": "images per second over the timed window (batch x steps / time)",
    "energy_j_per_img": "energy per image over the window, J (empty when not measured)",
    "sampled_energy_j_per_img": "NVML power samples integrated over the same window, J/img",
    "dram_energy_j_per_img": "RAPL DRAM energy per image, J (CPU, where exposed)",
    "avg_power_w": "energy / window seconds, W",
    "idle_power_w": "power before the cell, nothing running, W",
    "energy_source": "counter used (nvml:total_energy_counter, nvml:power_sampling, "
    "rapl:package) or 'unavailable: <reason>'",
    "energy_valid": "false when the window was too short for the counter or it did not advance",
    "energy_note": "why energy_valid is false",
    "peak_mem_bytes": "peak memory of the cell, bytes",
    "mem_source": "how peak memory was read (cuda:max_memory_allocated, cpu:vmhwm...)",
    "compile_s": "seconds of warm-up including torch.compile (never timed)",
    "harness_s": "wall seconds of the whole cell, process start and FLOP count included",
    "device_name": "GPU name or CPU model",
    "device_uuid": "GPU UUID (NVML is addressed by it, not by index)",
    "driver_version": "NVIDIA driver",
    "cuda_version": "CUDA version torch was built with",
    "cudnn_version": "cuDNN version",
    "tf32_matmul": "torch.backends.cuda.matmul.allow_tf32 as measured",
    "tf32_cudnn": "torch.backends.cudnn.allow_tf32 as measured",
    "cudnn_benchmark": "torch.backends.cudnn.benchmark",
    "cuda_visible_devices": "CUDA_VISIBLE_DEVICES of the job",
    "power_limit_w": "enforced GPU power limit, W",
    "sm_clock_mhz": "SM clock when the cell started, MHz",
    "mem_clock_mhz": "memory clock when the cell started, MHz",
    "temperature_c": "GPU temperature when the cell started, C",
    "gpu_processes": "compute processes on the GPU when the cell started",
    "torch_version": "torch version",
    "python_version": "Python version",
    "cpu_model": "CPU model",
    "threads": "torch intra-op threads",
    "hostname": "machine name",
    "git_sha": "attnbench commit ('+dirty' with uncommitted changes)",
    "timestamp": "UTC time the cell started",
    "overrides": "the Hydra overrides of the job",
    "schema_version": "version of this column set",
}


def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null rather than numbers that are not numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    return value


def write_json(target: Path, payload: Any) -> Path:
    """Write JSON so a reader sees the whole file or none (temp file, fsync, rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(clean(payload), handle, indent=1, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_row(job_dir: Path, row: dict[str, Any]) -> Path:
    """The row as result.json in its job directory, every column present (null: not measured)."""
    ordered = {key: row.get(key) for key in COLUMNS}
    ordered |= {key: value for key, value in row.items() if key not in ordered}
    ordered["schema_version"] = SCHEMA_VERSION
    return write_json(job_dir / ROW_FILE, ordered)


def read_row(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        return json.load(handle)
