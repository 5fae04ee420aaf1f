"""Timing that knows when it is wrong: contention on the CPU, clocks on the GPU; trials and
same-run A/B of revisions through the CLI; aggregation over trials."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fake_nvml import FakeNvml
from fixtures import FAST, attnbench, config, row

from harness.measuring import cell, revisions
from harness.measuring.cell import CellError
from harness.measuring.meters import contention
from harness.reporting import analysis
from harness.running import sweep
from harness.running.app import measure, quote_revisions

ROOT = Path(__file__).resolve().parent.parent


def test_a_busy_process_beside_a_real_cell_makes_its_timing_untrustworthy():
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(contention.usable_cpus())
    ]
    try:
        row, _ = measure(
            config(
                "attention=softmax",
                "resolution=64",
                "threads=2",
                "timing.window_s=1",
                "timing.warmup_s=0.2",
                "energy.idle_s=0",
            )
        )
    finally:
        for burner in burners:
            burner.kill()
    assert row["status"] == "ok"
    assert row["timing_valid"] is False
    assert row["timing_note"].startswith("threads waited for a CPU")
    assert "run-queue wait" in row["timing_note"] and "involuntary switches/s" in row["timing_note"]


def _cpu_check(monkeypatch, before, after, steal=((0, 1000), (0, 2000)), judged=True):
    tasks = iter([before, after])
    steals = iter(steal)
    monkeypatch.setattr(contention, "_tasks", lambda: next(tasks))
    monkeypatch.setattr(contention, "_steal", lambda: next(steals))
    monkeypatch.setattr(contention, "_load", lambda: 1.0)
    meter = contention.CpuContention(threads=2, cpus=2, judged=judged)
    meter.begin()
    contention.time.sleep(0.05)
    return meter.end()


def test_cpu_thresholds(monkeypatch):
    quiet = _cpu_check(
        monkeypatch,
        {"1": (0, 0), "2": (0, 0)},
        {"1": (49_000_000, 500_000), "2": (48_000_000, 400_000)},
    )
    assert quiet.valid and "run-queue wait 0.9%" in quiet.note
    waited = _cpu_check(monkeypatch, {"1": (0, 0)}, {"1": (40_000_000, 10_000_000)})
    assert not waited.valid and waited.note.startswith("threads waited for a CPU 20%")
    stolen = _cpu_check(
        monkeypatch, {"1": (0, 0)}, {"1": (49_000_000, 0)}, steal=((0, 1000), (100, 2000))
    )
    assert not stolen.valid and "hypervisor steal 10%" in stolen.note
    # a GPU cell's launch thread waits for the GPU: the same evidence, noted and not judged
    on_gpu = _cpu_check(monkeypatch, {"1": (0, 0)}, {"1": (40_000_000, 10_000_000)}, judged=False)
    assert on_gpu.valid and "not judged on a GPU cell: threads waited for a CPU 20%" in on_gpu.note


@pytest.mark.parametrize(
    "script,thermal_s,valid,text",
    [
        ({}, 0, True, "SM clock 1980..1980 MHz"),
        ({"clocks_event_reasons": [0, 0x04]}, 0, True, "software power cap at the end"),
        (
            {"clocks_event_reasons": [0, 0x40]},
            0,
            False,
            "hardware thermal slowdown at the window's end",
        ),
        # a P-state change reported before the window, while the GPU waits: evidence, not a verdict
        ({"clocks_event_reasons": [0x08, 0]}, 0, True, "before the window (idle GPU; not judged)"),
        ({}, 0.1, False, "the thermal limit held clocks down"),
        ({"sm_clock_mhz": [1980, 1980, 1200]}, 0, False, "SM clock below 90% of its 1980 MHz"),
    ],
)
def test_gpu_clocks_judge_the_window(script, thermal_s, valid, text):
    nvml = FakeNvml()
    nvml.script(temperature_c=[50, 61], **script)
    meter = contention.GpuClocks(nvml, "GPU-fake", interval_s=0.02)
    nvml.set_busy(True)
    meter.begin()
    if thermal_s:
        nvml.set_limited(1, True)  # NVML_PERF_POLICY_THERMAL
        time.sleep(thermal_s)
        nvml.set_limited(1, False)
    time.sleep(0.3 - thermal_s)
    check = meter.end()
    assert (check.valid, text in check.note) == (valid, True), check.note
    assert "50 -> 61 C" in check.note and "power limit held clocks down 0.0%" in check.note


def test_gpu_clocks_on_an_old_driver_read_the_older_throttle_reasons():
    nvml = FakeNvml(old_driver=True)  # no nvmlDeviceGetCurrentClocksEventReasons before 535
    nvml.script(clocks_event_reasons=[0, 0x40])
    meter = contention.GpuClocks(nvml, "GPU-fake")
    meter.begin()
    check = meter.end()
    assert not check.valid and "hardware thermal slowdown at the window's end" in check.note


def test_revision_values_are_quoted_for_hydra():
    assert quote_revisions(["revision=HEAD~1,HEAD", "resolution=224", "revision=null"]) == [
        "revision='HEAD~1','HEAD'",
        "resolution=224",
        "revision=null",
    ]


def test_a_revision_that_does_not_exist_is_refused_naming_it(tmp_path):
    done = attnbench(
        "sweep=smoke",
        "revision=no-such-ref",
        f"revision_repo={ROOT}",
        f"hydra.sweep.dir={tmp_path}/s",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert f"revision 'no-such-ref' does not exist in the git repository at {ROOT}" in done.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_refs_are_resolved_in_the_current_directory_and_outside_git_it_says_so(tmp_path):
    done = attnbench("sweep=smoke", "revision=HEAD", f"hydra.sweep.dir={tmp_path}/s", cwd=tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path} is not inside a git repository (the current directory)" in done.stderr
    missing = attnbench("sweep=smoke", "revision=HEAD", "revision_repo=/no/such/dir", cwd=tmp_path)
    assert missing.returncode == 2 and "revision_repo /no/such/dir is not a directory" in (
        missing.stderr
    )


def test_an_ab_sweep_with_trials_measures_both_sides_and_resumes_trials(tmp_path):
    head = revisions.resolve("HEAD", ROOT)
    args = [
        "attention=linear_infsa",
        "resolution=32",
        "revision=HEAD,null",
        f"revision_repo={ROOT}",
        "trials=2",
        f"hydra.sweep.dir={tmp_path}/ab",
        *FAST,
    ]
    done = attnbench(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "ab" / "results.csv", keep_default_na=False)
    assert sorted(zip(table["revision"], table["trial"], strict=True)) == [
        ("", 0),
        ("", 1),
        (head, 0),
        (head, 1),
    ]
    order = [
        line.split(" @")[1].split()[0] if " @" in line else "null"
        for line in done.stdout.splitlines()
        if line.startswith("[")
    ]
    assert order == [head, "null", "null", head]  # back to back, the first side alternating
    plan = json.loads((tmp_path / "ab" / "sweep.json").read_text())
    assert plan["revisions"] == [{"ref": "HEAD", "sha": head}, {"ref": "null", "sha": ""}]
    one = next(p for p in (tmp_path / "ab").rglob("result.json") if "trial=1" in str(p))
    os.remove(one)
    again = attnbench(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len([line for line in again.stdout.splitlines() if line.startswith("resumed:")]) == 3
    check = subprocess.run(
        [sys.executable, "-m", "harness.reporting.check", "--ab", str(tmp_path / "ab")],
        capture_output=True,
        text=True,
    )
    assert check.returncode in (0, 1, 3), check.stderr  # a verdict, not unusable input
    assert f"A/B HEAD ({head}) -> this checkout (working tree)" in check.stdout.splitlines()[-1]


def test_aggregating_trials_gives_medians_and_an_interval():
    trials = pd.DataFrame(
        [row("softmax", 224, throughput=t, trial=i) for i, t in enumerate((90.0, 100.0, 110.0))]
        + [row("softmax", 448, throughput=50.0)]
    )
    table = analysis.aggregate(trials).set_index("resolution")
    assert table.loc[224, "trials"] == 3 and table.loc[224, "throughput_img_s"] == 100.0
    assert table.loc[224, "throughput_lo"] < 90 < 110 < table.loc[224, "throughput_hi"]
    assert table.loc[224, "interval"] == "95% over 3 trials"
    assert table.loc[448, "interval"] == "p10..p90 of one window's steps"


def test_the_summary_counts_untrustworthy_cells_and_silent_jobs():
    table = pd.DataFrame(
        [
            row("softmax", 224, timing_valid=True, overrides="a"),
            row("sdpa", 224, timing_valid=False, overrides="b"),
        ]
    )
    text = sweep.summary(table, [["a"], ["b"], ["c"]])
    assert "2 cells: 2 ok; 1 of 2 ok cells have untrustworthy timing" in text
    assert "1 planned cells wrote no row: c" in text


@pytest.mark.parametrize("util,flagged", [(100, False), (40, True)])
def test_a_gpu_that_waits_for_launches_is_flagged_launch_bound(util, flagged):
    nvml = FakeNvml(busy_util=util)
    meter = contention.GpuClocks(nvml, "GPU-fake", interval_s=0.02)
    nvml.set_busy(True)
    meter.begin()
    time.sleep(0.2)
    check = meter.end()
    assert meter.busy_share == pytest.approx(util / 100)
    assert check.valid  # its timing is true: of launches, and the note says so
    assert ("launch-bound: the GPU ran kernels 40% of the window" in check.note) == flagged


def test_compile_modes_are_checked_and_part_of_the_identity():
    from harness.data import rows

    with pytest.raises(CellError, match="valid choices: default, reduce-overhead"):
        config("compile=true", "compile_mode=fastest")
    with pytest.raises(CellError, match="needs compile=true"):
        config("compile_mode=reduce-overhead")
    graphs = cell.fields(config("compile=true", "compile_mode=reduce-overhead"))
    plain = cell.fields(config("compile=true"))
    assert plain["compile_mode"] is None  # torch's default, as rows before the setting say
    assert rows.identity(graphs) != rows.identity(plain)
