"""Scale-out on a real one-node SLURM cluster (tests/slurm_cluster.py): the smoke sweep as an
array job, a task cancelled mid-cell, a time limit shorter than a cell, the report afterwards."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import slurm_cluster
from fixtures import attnbench

from harness.data import rows as schema

WHY = slurm_cluster.missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=test",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.array_parallelism=4",
    "threads=1",  # jobs run side by side on the node's cores
]
TINY = ["timing.window_s=0.1", "timing.warmup_s=0", "timing.warmup_iters=1", "energy.idle_s=0"]
QUIET = ["doctor=false", "report=false"]  # the report is built afterwards, from the login side


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def time_limited(cluster, tmp_path_factory):
    """A sweep whose one cell outlasts its 2-minute SLURM limit, started early and collected by
    the last test, so that its time overlaps the other tests. (With a 1-minute limit nothing
    can be measured: SLURM may send the warning signal up to 60 s early, and a test that used
    one failed whenever it did.)"""
    where = tmp_path_factory.mktemp("limited")
    command = [
        sys.executable,
        "-m",
        "harness",
        "attention=softmax",
        "resolution=448",
        "timing.window_s=600",
        "timing.warmup_s=0",
        "energy.idle_s=0",
        *SLURM,
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=5",
        f"hydra.sweep.dir={where}/t",
    ]
    started = subprocess.Popen(
        command,
        cwd=where,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield started, where / "t"
    started.kill()


def measuring() -> list[str]:
    """The array tasks ('<job>_<task>') whose cells are measuring now: the children of
    attnbench's fork servers, named by the SLURM job they inherited."""
    stats = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(
                item.split(b"=", 1)
                for item in (proc / "environ").read_bytes().split(b"\0")
                if b"=" in item
            )
        except (OSError, ValueError, IndexError):
            continue
        stats[int(proc.name)] = (cmdline, ppid, env)
    servers = {pid for pid, (cmd, _, _) in stats.items() if b"multiprocessing.forkserver" in cmd}
    return sorted(
        f"{env[b'SLURM_ARRAY_JOB_ID'].decode()}_{env[b'SLURM_ARRAY_TASK_ID'].decode()}"
        for _, ppid, env in stats.values()
        if ppid in servers and b"SLURM_ARRAY_TASK_ID" in env
    )


def statuses(sweep: Path) -> dict[str, str]:
    return {schema.identity(r): r["status"] for r in schema.read_rows(sweep)}


def test_the_smoke_sweep_as_an_array_job_matches_the_basic_launcher(
    cluster, time_limited, tmp_path
):
    grid = ["sweep=smoke", "resolution=32", *TINY, *QUIET]
    on_slurm = attnbench(
        *grid,
        *SLURM,
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={tmp_path}/slurm",
        cwd=tmp_path,
        env=cluster.env,
    )
    assert on_slurm.returncode == 0, on_slurm.stderr[-3000:] + cluster.logs()
    basic = attnbench(*grid, "threads=1", f"hydra.sweep.dir={tmp_path}/basic", cwd=tmp_path)
    assert basic.returncode == 0, basic.stderr[-2000:]
    slurm_cells, basic_cells = statuses(tmp_path / "slurm"), statuses(tmp_path / "basic")
    assert len(slurm_cells) == 3 and slurm_cells == basic_cells
    table = pd.read_csv(tmp_path / "slurm" / "results.csv")
    assert set(table["status"]) == {"ok"} and len(table) == 3
    assert list((tmp_path / "slurm" / ".submitit").glob("*_*/*_result.pkl"))  # a real array
    # the report, built afterwards from the login side
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.reporting.report",
            str(tmp_path / "slurm"),
            "--out",
            str(tmp_path / "rep"),
        ],
        capture_output=True,
        text=True,
    )
    assert (tmp_path / "rep" / "report.html").is_file(), again.stderr


def test_a_task_cancelled_mid_cell_says_so_and_a_rerun_measures_only_it(cluster, tmp_path):
    args = [
        "attention=softmax",
        "resolution=32,48",
        "timing.window_s=4",
        "timing.warmup_s=0",
        "energy.idle_s=0",
        *QUIET,
        *SLURM,
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={tmp_path}/s",
    ]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=tmp_path,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(measuring()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # both cells are past their set-up, inside their windows
    running = measuring()
    assert len(running) == 2 and not schema.read_rows(tmp_path / "s")
    subprocess.run(["scancel", running[1]], env=cluster.env, check=True)
    out, err = sweep.communicate(timeout=180)
    assert sweep.returncode == 0, err[-3000:]
    rows = {r["resolution"]: r for r in schema.read_rows(tmp_path / "s")}
    kept = rows[32]
    assert kept["status"] == "ok"
    # the cancelled one: a whole row saying what happened, not partial, not oom
    assert rows[48]["status"] == "error"
    assert rows[48]["error"].startswith("stopped: the job got SIGTERM")
    shorter = [a.replace("window_s=4", "window_s=1") for a in args]  # not part of the identity
    again = attnbench(*shorter, cwd=tmp_path, env=cluster.env)
    assert again.returncode == 0, again.stderr[-3000:]
    after = {r["resolution"]: r for r in schema.read_rows(tmp_path / "s")}
    assert {r["status"] for r in after.values()} == {"ok"}, [r["error"] for r in after.values()]
    assert after[32]["timestamp"] == kept["timestamp"]  # only the cancelled cell was measured


def test_a_time_limit_shorter_than_a_cell_still_leaves_an_error_row(time_limited):
    sweep, where = time_limited
    out, err = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, err[-3000:]
    (row,) = schema.read_rows(where)
    assert row["status"] == "error"
    assert re.fullmatch(
        r"timed out after [1-4]\d(\.\d+)? s \(timeout_s, kept inside the launcher's 2-min limit "
        r"less its 5 s signal delay and the 60 s early SLURM may send it; the job started \d+ s "
        r"ago\)",
        row["error"],
    ), row["error"]
    assert row["params"] > 0 and row["flops"] > 0
    assert json.loads((where / "sweep.json").read_text())["jobs"]
