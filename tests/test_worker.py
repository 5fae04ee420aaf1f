"""The measuring process: how its end is classified, what it keeps, and what files it leaves."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import FAST, config

from harness.data import rows
from harness.running import app, gpus, worker


def test_a_clean_run_merges_early_and_final_fields():
    outcome = worker.run("worker_targets:fine", (), 60)
    assert (outcome.status, outcome.fields) == ("ok", {"params": 7, "latency_ms": 1.0})


def test_a_failure_keeps_the_message_the_traceback_and_what_was_sent():
    outcome = worker.run("worker_targets:boom", (), 60)
    assert outcome.status == "error" and outcome.message == "ZeroDivisionError: division by zero"
    assert outcome.traceback.startswith("Traceback") and "worker_targets.py" in outcome.traceback
    assert outcome.fields == {"params": 7}


def test_the_time_limit_warning_stops_the_cell_and_keeps_its_row():
    """submitit ends a job it cannot requeue on SIGUSR2; the cell must be recorded first."""
    outcome = worker.run("worker_targets:warn_job_then_wait", (os.getpid(),), 120)
    assert outcome.status == "error" and outcome.terminated and outcome.fields == {"params": 7}
    assert outcome.message.startswith("stopped: the job got SIGUSR2 (the launcher's time-limit")


def test_sigkill_without_oom_evidence_is_an_error_not_an_oom():
    outcome = worker.run("worker_targets:kill_self", (), 60)
    assert outcome.status == "error"
    assert outcome.message.startswith("measuring process killed by SIGKILL")
    assert outcome.fields == {"params": 7}


@pytest.mark.parametrize(
    "exitcode,before,after,status,text",
    [
        (-signal.SIGKILL, 3, 4, "oom", "oom_kill count rose 3 -> 4"),
        (-signal.SIGKILL, 3, 3, "error", "did not rise"),
        (-signal.SIGKILL, None, None, "error", "no OOM evidence readable"),
        (-signal.SIGTERM, 3, 4, "error", "killed by SIGTERM"),
        (1, None, None, "error", "exited with code 1"),
    ],
)
def test_how_a_silent_death_is_classified(exitcode, before, after, status, text):
    outcome = worker.died(exitcode, before, after)
    assert outcome.status == status and text in outcome.message


def test_the_cgroup_oom_counter_is_read_for_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.events").write_text("low 0\nhigh 0\nmax 2\noom 2\noom_kill 5\n")
    (tmp_path / "cg2").write_text("0::/job\n")
    assert worker.cgroup_oom_kills(tmp_path / "cg2", v2) == 5
    v1 = tmp_path / "v1"
    (v1 / "memory" / "job").mkdir(parents=True)
    (v1 / "memory" / "job" / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 9\n")
    (tmp_path / "cg1").write_text("4:cpu,cpuacct:/job\n7:memory:/job\n")
    assert worker.cgroup_oom_kills(tmp_path / "cg1", v1) == 9
    assert worker.cgroup_oom_kills(tmp_path / "missing", v1) is None


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = rows.write_row(tmp_path / "job", {"attention": "softmax"})
        table = rows.write_results(tmp_path)[0]
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert table.stat().st_mode & 0o777 == mode


def test_the_lock_directory_is_shared_and_a_read_only_lock_file_still_locks(tmp_path):
    where = tmp_path / "locks"
    held = gpus.lease([(0, "GPU-a")], where, wait_s=0)
    assert where.stat().st_mode & 0o7777 == 0o1777
    assert (where / "GPU-a.lock").stat().st_mode & 0o777 == 0o666
    held.release()
    (where / "GPU-a.lock").chmod(0o444)  # as if another user made it under a strict umask
    again = gpus.lease([(0, "GPU-a")], where, wait_s=0)
    with pytest.raises(gpus.NoFreeGpu):
        gpus.lease([(0, "GPU-a")], where, wait_s=0)
    again.release()


def test_an_unusable_lock_directory_is_an_error_row_not_a_dead_job(tmp_path, monkeypatch):
    (tmp_path / "not-a-dir").write_text("")
    cfg = config(
        "attention=softmax", "resolution=32", f"gpu.lock_dir={tmp_path}/not-a-dir/x", *FAST
    )
    cfg.device = "cuda"
    monkeypatch.setattr(gpus, "candidates", lambda device: [(0, "GPU-a")])
    row, trace = app.leased(cfg)
    assert row["status"] == "error" and "Not a directory" in row["error"]
    assert row["attention"] == "softmax" and trace == ""


def test_the_check_imports_neither_torch_nor_matplotlib(tmp_path):
    code = (
        "import sys; from harness.reporting import check; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_script_without_a_main_guard_can_measure(tmp_path):
    """The measuring process does not re-run the launching script (multiprocessing would)."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from harness.running import worker\n"
        "print(worker.run('worker_targets:fine', (), 60).status)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
