"""Measuring one cell: the CLI, its bad-input messages, isolation of OOM and failures."""

import json
import re
import sys

import pytest
import torch
from fixtures import FAST, attnbench, config

from harness.config import TimingConfig
from harness.data import rows
from harness.measuring.cell import CellError
from harness.measuring.meters.allocator import AllocatorMeter
from harness.measuring.meters.base import Window
from harness.measuring.meters.memory import MemoryMeter
from harness.measuring.timing import Timer, Timing
from harness.running.app import measure

REQUIRED = [
    "attention",
    "model",
    "depth",
    "dim",
    "heads",
    "resolution",
    "tokens",
    "batch_size",
    "mode",
    "dtype",
    "device",
    "status",
    "error",
    "params",
    "macs",
    "flops",
    "latency_ms",
    "latency_ms_p10",
    "latency_ms_p90",
    "iters",
    "window_s",
    "throughput_img_s",
    "energy_j_per_img",
    "avg_power_w",
    "idle_power_w",
    "energy_source",
    "peak_mem_bytes",
    "mem_source",
    "device_name",
    "torch_version",
    "git_sha",
    "timestamp",
]


def small(*overrides):
    """A tiny validated cell: a 2-block, 64-wide model at 64 px, short windows."""
    return config(
        "attention=softmax",
        "model.depth=2",
        "model.dim=64",
        "model.num_heads=2",
        "resolution=64",
        "device=cpu",
        *FAST,
        *overrides,
    )


def test_one_real_cell_through_the_cli_writes_a_complete_row(tmp_path):
    done = attnbench(
        "hydra.mode=RUN",
        "attention=linear_infsa",
        "resolution=64",
        "batch_size=2",
        f"hydra.run.dir={tmp_path}/job",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads((tmp_path / "job" / rows.ROW_FILE).read_text())
    unmeasured = {"energy_j_per_img", "avg_power_w", "idle_power_w"}  # empty without a source
    if not row["energy_source"].startswith("unavailable"):
        unmeasured = set()
    missing = [c for c in REQUIRED if row[c] is None and c not in unmeasured]
    assert not missing, missing  # write_row writes every column; an ok row has these values
    assert row["status"] == "ok" and row["error"] == ""
    assert (row["attention"], row["resolution"], row["tokens"], row["batch_size"]) == (
        "linear_infsa",
        64,
        16,
        2,
    )
    assert row["flops"] == 2 * row["macs"] > 0
    assert row["throughput_img_s"] > 0 and row["iters"] >= 2
    assert row["latency_ms_p10"] <= row["latency_ms"] <= row["latency_ms_p90"]
    assert row["peak_mem_bytes"] > 0 and row["mem_source"].startswith("cpu:step_allocations")
    assert row["peak_rss_bytes"] > 0 and "M_MMAP_THRESHOLD=33554432" in row["allocator_conf"]
    if row["energy_source"].startswith("unavailable"):
        assert row["energy_j_per_img"] is None and row["avg_power_w"] is None
    else:
        assert row["energy_j_per_img"] > 0
    assert "attention=linear_infsa" in row["overrides"]
    assert "ok" in done.stdout and "img/s" in done.stdout


@pytest.mark.parametrize(
    "override,message",
    [
        ("resolution=225", "valid resolutions: 16, 32"),
        ("batch_size=0", "batch_size must be an integer >= 1"),
        ("dtype=float8", "valid choices: float32, bfloat16, float16"),
        ("mode=eval", "valid choices: infer, train"),
        ("device=tpu", "valid choices: auto, cpu, cuda, cuda:N"),
        ("threads=0", "threads must be >= 1"),
        ("malloc=jemalloc", "valid choices: steady, system"),
        ("+attention.window=3", "valid: window_size, shift"),
        ("attention.window_size=seven", "window_size='seven' must be int"),
    ],
)
def test_bad_input_is_refused_naming_the_choices(override, message):
    with pytest.raises(CellError, match=re.escape(message)):
        config("attention=swin", override)


def test_bad_input_on_the_command_line_exits_2_before_measuring(tmp_path):
    done = attnbench(
        "hydra.mode=RUN", "mode=eval", f"hydra.run.dir={tmp_path}/job", *FAST, cwd=tmp_path
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip() == "attnbench: error: unknown mode 'eval'; valid choices: infer, train"
    )
    assert not (tmp_path / "job" / rows.ROW_FILE).exists()  # nothing measured


@pytest.mark.skipif(sys.modules.get("torch").cuda.is_available(), reason="machine has CUDA")
def test_missing_cuda_device_names_what_this_machine_has(tmp_path):
    done = attnbench(
        "hydra.mode=RUN", "device=cuda:1", f"hydra.run.dir={tmp_path}/job", *FAST, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "CUDA is not available; valid choices here: auto, cpu" in done.stderr


def test_unknown_attention_lists_the_available_configs(tmp_path):
    done = attnbench("hydra.mode=RUN", "attention=flash", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("attnbench: error: unknown attention 'flash'; valid choices:")
    assert "linear_infsa" in done.stderr and "pkg.module.Class" in done.stderr


def test_oom_cell_is_recorded_and_the_next_cell_still_runs(tmp_path):
    """A multirun of two cells under 0.1 GiB: 1024² softmax scores (200 MB) cannot fit."""
    done = attnbench(
        "-m",
        "attention=softmax",
        "resolution=1024,64",
        "memory_limit_gb=0.1",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    found = {
        r["resolution"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/result.json"))
    }
    assert found[1024]["status"] == "oom"
    assert "can't allocate memory" in found[1024]["error"]
    assert found[1024]["flops"] > 0  # counted without allocating
    assert found[64]["status"] == "ok" and found[64]["throughput_img_s"] > 0


def test_bad_cell_in_a_multirun_is_an_error_row_not_a_crash(tmp_path):
    done = attnbench(
        "-m",
        "attention=softmax",
        "resolution=64,100",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    statuses = {
        r["resolution"]: (r["status"], r["error"])
        for r in (json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/result.json"))
    }
    assert statuses[64][0] == "ok"
    assert statuses[100][0] == "error" and "valid resolutions" in statuses[100][1]


def test_a_cell_past_its_timeout_is_an_error_that_keeps_its_counts():
    from harness.running import worker

    worker.run("worker_targets:fine", (), 60)  # the fork server's first start is not the cell's
    row, _ = measure(small("timeout_s=4", "timing.window_s=60", "timing.max_iters=10000000"))
    assert row["status"] == "error" and "timed out after 4 s" in row["error"]
    assert row["params"] > 0 and row["flops"] > 0  # sent before the window began


def test_train_cell_in_bfloat16_measures():
    row, trace = measure(small("mode=train", "dtype=bfloat16", "attention=swin", "batch_size=2"))
    assert row["status"] == "ok", row["error"]
    assert trace == ""
    assert row["throughput_img_s"] > 0 and row["latency_ms"] > 0


def test_timer_warms_up_estimates_and_fills_its_window():
    calls = []
    config = TimingConfig(warmup_iters=3, warmup_s=0, window_s=10.0, min_iters=5, max_iters=50)
    timer = Timer(lambda: calls.append(1), torch.device("cpu"), config)
    timer.warm_up()
    assert len(calls) == 6  # 3 warm-up steps, 3 more for the median estimate
    timer.estimate_s = 0.1  # a GPU window is planned from the estimate
    assert timer.planned_iters() == 50  # 101 wanted, capped at max_iters
    timer.estimate_s = 10.0
    assert timer.planned_iters() == 5
    assert timer.measure().iters == 50  # a CPU window runs on the clock, up to max_iters
    quick = Timer(lambda: None, torch.device("cpu"), TimingConfig(window_s=0, min_iters=5))
    quick.warm_up()
    assert quick.measure().iters == 5  # ...and at least min_iters


def test_timing_quantiles():
    timing = Timing([float(i) for i in range(1, 102)], 1.0)
    assert (timing.quantile(0.1), timing.median_s, timing.quantile(0.9)) == (11.0, 51.0, 91.0)


def test_cpu_memory_peak_belongs_to_the_window():
    meter = MemoryMeter(torch.device("cpu"))
    resident = torch.ones(32 * 2**20 // 4)  # 32 MiB made before begin(): counted as resident
    meter.begin()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB in the window, touched
    del block
    meter.end()
    peak = meter.peak
    assert 90 * 2**20 < peak < 250 * 2**20
    del resident
    later = MemoryMeter(torch.device("cpu"))
    later.begin()  # a new meter forgets the old peak
    later.end()
    assert later.peak < 32 * 2**20


def test_cpu_peak_memory_is_what_torch_allocated_in_the_step():
    """An 8 MiB buffer made and freed, then 4 MiB: the peak is the 8 MiB (plus bookkeeping
    bytes), not what was allocated before the step and not the process's resident set."""
    before = torch.ones(16 * 2**20 // 4)  # found allocated: not the step's
    meter = AllocatorMeter()
    meter.begin()
    first = torch.empty(2**20, dtype=torch.float64)
    del first
    second = torch.empty(2**19, dtype=torch.float64)
    meter.end()
    assert 8 * 2**20 <= meter.peak < 8 * 2**20 + 4096, meter.source
    assert meter.fields(Window(1, 1.0))["mem_source"].startswith("cpu:step_allocations_peak")
    del before, second


def test_help_says_what_a_plain_attnbench_does(tmp_path):
    done = attnbench("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "`attnbench` alone runs the default sweep (sweep=quick" in done.stdout
    assert "attention: " in done.stdout and "linear_infsa" in done.stdout  # the choices
    assert "timing.window_s" in done.stdout and "attnbench-doctor" in done.stdout
