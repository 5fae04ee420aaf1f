"""Synthetic rows in the result schema, for report and check tests. Every row passes the
schema's own column check, so a renamed or misspelt column fails here."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from harness.data.rows import check_columns


def row(
    attention="softmax",
    resolution=224,
    mode="infer",
    status="ok",
    throughput=100.0,
    energy=None,
    model="paper_4l",
    depth=4,
    batch=1,
    dtype="bfloat16",
    device="cuda:0",
    device_name="NVIDIA H100 80GB HBM3",
    **extra,
) -> dict:
    tokens = (resolution // 16) ** 2
    ok = status == "ok"
    base = dict(
        attention=attention,
        attention_options="{}",
        model=model,
        depth=depth,
        dim=1024,
        heads=64,
        patch_size=16,
        mlp_ratio=4.0,
        resolution=resolution,
        height=resolution,
        tokens=tokens,
        batch_size=batch,
        mode=mode,
        dtype=dtype,
        device=device,
        compile=False,
        tf32=False,
        threads=2,
        trial=0,
        revision="",
        status=status,
        error="" if ok else status,
        params=50_000_000,
        macs=10**9 * tokens // 196,
        flops=2 * 10**9 * tokens // 196,
        latency_ms=1000.0 * batch / throughput if ok else None,
        latency_ms_p10=950.0 * batch / throughput if ok else None,
        latency_ms_p90=1050.0 * batch / throughput if ok else None,
        iters=50 if ok else None,
        window_s=2.0 if ok else None,
        throughput_img_s=throughput if ok else None,
        energy_j_per_img=energy if ok else None,
        energy_valid=energy is not None and ok,
        avg_power_w=energy * throughput if ok and energy is not None else None,
        energy_source="nvml:total_energy_counter"
        if energy is not None
        else "unavailable: no readable RAPL package counter",
        peak_mem_bytes=2**20 * tokens if ok else None,
        mem_source="cuda:max_memory_allocated",
        device_name=device_name,
        torch_version="2.13.0",
        git_sha="abc123",
        timestamp="2026-11-23T00:00:00+00:00",
    )
    base.update(extra)
    check_columns(base)
    return base


def ladder(energy: bool = True) -> pd.DataFrame:
    """softmax runs out of memory past 1024, sdpa is slower than linear_infsa, one error."""
    rows = []
    for mode in ("infer", "train"):
        for res in (224, 512, 1024, 2048, 4096):
            scale = (res / 224) ** 2
            rows.append(
                row(
                    "softmax",
                    res,
                    mode,
                    throughput=1000 / scale**2,
                    energy=0.2 * scale**2 if energy else None,
                )
                if res <= 1024
                else row("softmax", res, mode, status="oom" if res == 2048 else "skipped_oom")
            )
            rows.append(
                row(
                    "sdpa",
                    res,
                    mode,
                    throughput=1500 / scale**1.5,
                    energy=0.15 * scale**1.5 if energy else None,
                )
            )
            rows.append(
                row(
                    "linear_infsa",
                    res,
                    mode,
                    throughput=900 / scale,
                    energy=0.18 * scale if energy else None,
                )
            )
    rows.append(row("nystrom", 224, "infer", status="error", error="RuntimeError: boom"))
    return pd.DataFrame(rows)


def attnbench(*args, cwd, **kw) -> subprocess.CompletedProcess:
    """The attnbench CLI in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def config(*overrides: str):
    """A job's validated config, composed by Hydra exactly as `attnbench` composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness import paths
    from harness.measuring import cell
    from harness.running import app

    app.setup(app.load_mechanisms(list(overrides)))
    with initialize_config_dir(str(paths.config_dir()), version_base=None):
        raw = compose("config", overrides=list(overrides))
    return cell.validate(OmegaConf.to_object(raw))


# Short windows for tests that need a real measurement but no particular number ...
MEASURE = [
    "timing.window_s=0.1",
    "timing.warmup_iters=1",
    "timing.warmup_s=0",
    "timing.min_iters=2",
    "energy.idle_s=0",
]
# ... and, for sweeps whose test reads neither, no doctor at the start and no report at the end
# (1.3 s and 1.5-2.5 s of every sweep here)
FAST = [*MEASURE, "doctor=false", "report=false"]
