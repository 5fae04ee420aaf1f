"""Scale-out: real launchers end to end, one GPU per measured job, nothing lost when a job dies,
reports written at once."""

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lease_holder
import pandas as pd
import pytest
import yaml
from fixtures import attnbench, ladder

from harness.reporting import report
from harness.running import gpus

FAST = ["timing.window_s=0.1", "timing.warmup_s=0", "timing.warmup_iters=1", "energy.idle_s=0"]
GPUS = [(0, "GPU-aaaa"), (1, "GPU-bbbb")]


def rows_in(sweep: Path) -> dict:
    return {
        (r["attention"], r["resolution"]): r
        for r in (json.loads(p.read_text()) for p in sweep.glob("*/result.json"))
    }


def test_submitit_local_end_to_end(tmp_path):
    done = attnbench(
        "attention=softmax,linear_infsa",
        "resolution=64",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = rows_in(tmp_path / "sweep")
    assert {k: r["status"] for k, r in found.items()} == {
        ("softmax", 64): "ok",
        ("linear_infsa", 64): "ok",
    }
    assert (tmp_path / "sweep" / "results.csv").is_file()
    assert "2 cells: 2 ok" in done.stdout
    assert (tmp_path / "reports" / "quick" / "report.html").is_file()


@pytest.mark.parametrize(
    "preset,expected",
    [
        ("slurm", {"gpus_per_node": 1, "tasks_per_node": 1, "max_num_timeout": 0}),
        ("slurm_energy", {"gpus_per_node": 1, "additional_parameters": {"exclusive": True}}),
        ("multi_gpu", {"backend": "loky"}),
    ],
)
def test_launcher_presets_compose(tmp_path, preset, expected):
    done = attnbench(
        f"hydra/launcher={preset}", "--cfg", "hydra", "--package", "hydra.launcher", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    launcher = yaml.safe_load(done.stdout)
    assert expected.items() <= launcher.items()


def test_leases_hand_out_distinct_gpus_and_wait_for_a_free_one(tmp_path):
    first = gpus.lease(GPUS, tmp_path, wait_s=0)
    second = gpus.lease(GPUS, tmp_path, wait_s=0)
    assert {first.device, second.device} == {"cuda:0", "cuda:1"}
    with pytest.raises(gpus.NoFreeGpu, match="no free GPU among cuda:0, cuda:1"):
        gpus.lease(GPUS, tmp_path, wait_s=0.2, poll_s=0.05)
    first.release()
    third = gpus.lease(GPUS, tmp_path, wait_s=0)
    assert third.device == first.device
    third.release()
    second.release()


def test_an_explicit_gpu_is_only_that_gpu(tmp_path):
    held = gpus.lease([GPUS[1]], tmp_path, wait_s=0)
    with pytest.raises(gpus.NoFreeGpu, match="cuda:1"):
        gpus.lease([GPUS[1]], tmp_path, wait_s=0)
    assert gpus.lease([GPUS[0]], tmp_path, wait_s=0).device == "cuda:0"
    held.release()


def test_parallel_jobs_never_share_a_gpu(tmp_path):
    log = tmp_path / "log"
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=lease_holder.hold, args=(str(tmp_path / "locks"), str(log), 0.3))
        for _ in range(5)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    spans: dict[str, list[tuple[float, float]]] = {}
    for line in log.read_text().splitlines():
        key, start, end = line.split()
        spans.setdefault(key, []).append((float(start), float(end)))
    assert sum(len(s) for s in spans.values()) == 5 and set(spans) <= {k for _, k in GPUS}
    for intervals in spans.values():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start >= end, "two jobs held one GPU at once"


def test_a_killed_holder_frees_its_gpu(tmp_path):
    code = (
        "import sys, time; from pathlib import Path; from harness.running import gpus; "
        f"gpus.lease([(0, 'GPU-aaaa')], Path({str(tmp_path)!r}), 0); print('held', flush=True);"
        " time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(gpus.NoFreeGpu):
        gpus.lease([(0, "GPU-aaaa")], tmp_path, wait_s=0)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    gpus.lease([(0, "GPU-aaaa")], tmp_path, wait_s=0).release()


def test_a_job_killed_mid_cell_leaves_no_partial_row_and_a_rerun_completes(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "attention=softmax",
        "resolution=64,96",
        f"hydra.sweep.dir={sweep}",
        "timing.window_s=1",
        "timing.warmup_s=0",
        "energy.idle_s=0",
        "doctor=false",
        "report=false",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list(sweep.glob("*/result.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.7)  # the second cell is inside its timed window now
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = list(sweep.glob("*/result.json"))
    assert len(written) == 1
    assert json.loads(written[0].read_text())["status"] == "ok"  # whole, parseable
    shorter = [a.replace("window_s=1", "window_s=0.2") for a in args]  # not in the identity
    again = attnbench(*shorter, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    resumed = [line for line in again.stdout.splitlines() if line.startswith("resumed:")]
    assert len(resumed) == 1 and "softmax small 64px" in resumed[0]
    assert {k: r["status"] for k, r in rows_in(sweep).items()} == {
        ("softmax", 64): "ok",
        ("softmax", 96): "ok",
    }


def _render(out: str, factor: float) -> None:
    rows = ladder()
    report.render(
        {"run": rows.assign(throughput_img_s=rows["throughput_img_s"] * factor)}, Path(out)
    )


def test_two_reports_written_at_once_do_not_clobber_each_other(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_render, args=(str(tmp_path), f)) for f in (1.0, 2.0, 3.0)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    md = (tmp_path / "report.md").read_text()
    images = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert images and all((tmp_path / name).stat().st_size > 1000 for name in images)
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!doctype html>") and html.endswith("</body></html>")
    assert not list(tmp_path.glob(".*.tmp"))


def test_results_csv_is_built_from_every_job_directory(tmp_path):
    from fixtures import row

    from harness.data.rows import write_results, write_row

    for i in range(50):
        write_row(tmp_path / "sweep" / f"job{i}", row("softmax", 16 * (i + 1)))
    (tmp_path / "sweep" / "job7" / "result.json").write_text("{truncated")  # a torn write
    path, table = write_results(tmp_path / "sweep")
    written = pd.read_csv(path)
    assert sorted(written["resolution"]) == [16 * (i + 1) for i in range(50) if i != 7]
    assert list(written.columns) == list(table.columns)


def test_a_launcher_limit_that_leaves_no_time_for_a_cell_is_refused_before_submitting(tmp_path):
    done = attnbench(
        "attention=softmax",
        "resolution=32",
        "hydra/launcher=slurm",
        "hydra.launcher.timeout_min=1",  # and submitit signals the job 120 s before its limit
        f"hydra.sweep.dir={tmp_path}/s",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert (
        "hydra.launcher leaves each job -120 s (the launcher's 1-min limit less its 120 s "
        "signal delay and the 60 s early SLURM may send it)" in done.stderr
    )
    assert not (tmp_path / "s" / ".submitit").exists()


def test_the_cell_timeout_stays_inside_the_launcher_budget(monkeypatch):
    from harness.running import app

    budget = (3480.0, "the launcher's 60-min limit less its 120 s signal delay")
    assert app.cell_timeout(3600, None) == (3600, "timeout_s")
    monkeypatch.setattr(app, "job_age", lambda: 100.0)
    seconds, why = app.cell_timeout(3600, budget)
    assert seconds == 3480 - 100 - 174  # what is left since the job started, less 5% for the row
    assert why == f"timeout_s, kept inside {budget[1]}; the job started 100 s ago"
    assert app.cell_timeout(600, budget) == (600, "timeout_s")
    monkeypatch.setattr(app, "job_age", lambda: 3400.0)  # a slow start ate the budget
    assert app.cell_timeout(600, budget)[0] <= 0


def test_a_cell_with_no_time_left_is_not_started_and_says_so():
    from harness.running import worker

    outcome = worker.run("worker_targets:fine", (), -5.0, "kept inside the limit")
    assert outcome.status == "error"
    assert outcome.message == "not started: no time left to measure (kept inside the limit)"


def test_the_job_age_under_slurm_is_the_batch_scripts(tmp_path, monkeypatch):
    """The job's oldest process of the same SLURM_JOB_ID (the batch script) sets the age."""
    from harness.running import app

    uptime = float(Path("/proc/uptime").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")

    def process(pid: int, parent: int, started_s_ago: float, job: str | None) -> None:
        where = tmp_path / str(pid)
        where.mkdir()
        fields = ["S", str(parent)] + ["0"] * 17 + [str(int((uptime - started_s_ago) * tick))]
        (where / "stat").write_text(f"{pid} (python) " + " ".join(fields))
        (where / "environ").write_bytes(f"SLURM_JOB_ID={job}\0".encode() if job else b"")

    me = os.getpid()
    process(me, 40, 5.0, "7")  # this process: 5 s old
    process(40, 30, 20.0, "7")  # srun's step
    process(30, 20, 50.0, "7")  # the batch script: the job's start
    process(20, 1, 900.0, None)  # slurmstepd: not of the job's environment
    (tmp_path / "self").symlink_to(tmp_path / str(me))
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert 49 < app.job_age(tmp_path) < 51
    monkeypatch.delenv("SLURM_JOB_ID")
    assert 4 < app.job_age(tmp_path) < 6


def test_a_lease_that_waits_says_what_it_waits_for(tmp_path):
    held = gpus.lease(GPUS, tmp_path, wait_s=5)
    said = []
    with pytest.raises(gpus.NoFreeGpu, match="within 0 s"):
        gpus.lease(GPUS[:1], tmp_path, wait_s=0.3, poll_s=0.02, say=said.append, every_s=0.1)
    assert said and all(
        "waiting" in line and "for a free GPU among cuda:0" in line for line in said
    )
    held.release()
