"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's
slurm-wlm and munge packages, run as root without cgroups, configured in a temporary directory.

No accounting storage: the tests read job state with squeue and the rows themselves, and
submitit only warns that sacct has nothing (its results come from files it writes itself).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"{', '.join(absent)} not installed (.ci/run installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Start with `Cluster(tmp).start()`; `env` is what a client (sbatch, submitit) needs."""

    def __init__(self, root: Path, cpus: int = 4) -> None:
        self.root, self.cpus = root, cpus
        self.host = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.conf = root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def _write_config(self) -> None:
        for sub in ("state", "spool", "munge", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        memory = 4096
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=attnbench-test",
                    f"SlurmctldHost={self.host}",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={self.root / 'munge' / 'munge.socket'}",
                    "CredType=cred/munge",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "SchedulerType=sched/backfill",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "SlurmdParameters=config_overrides",
                    "KillWait=5",
                    "MinJobAge=10",
                    f"NodeName={self.host} CPUs={self.cpus} RealMemory={memory} State=UNKNOWN",
                    f"PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE "
                    "State=UP OverSubscribe=NO",
                ]
            )
            + "\n"
        )

    def start(self, timeout_s: float = 60.0) -> Cluster:
        self._write_config()
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge = self.root / "munge"
        self._spawn(
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={munge / 'munge.socket'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ]
        )
        self._wait(lambda: (munge / "munge.socket").exists(), timeout_s, "munged")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn(["slurmd", "-D", "-f", str(self.conf)])
        self._wait(self.idle, timeout_s, "the node to become idle")
        return self

    def _spawn(self, command: list[str]) -> None:
        log = open(self.root / "log" / f"{Path(command[0]).name}.out", "wb")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        )

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{proc.args[0]} exited ({proc.returncode}) while waiting for {what}: "
                        f"{self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {self.logs()}")
            time.sleep(0.5)

    def idle(self) -> bool:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True
        )
        return (
            done.returncode == 0
            and done.stdout.strip() in ("idle", "idle*")
            and "*" not in done.stdout
        )

    def queue(self) -> list[tuple[str, str]]:
        """(job id, state) of every job in the queue."""
        done = subprocess.run(
            ["squeue", "-h", "-o", "%i %T"], env=self.env, capture_output=True, text=True
        )
        return [tuple(line.split()) for line in done.stdout.splitlines()]  # type: ignore[misc]

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job and wait for the node to be empty (a job step left running when
        slurmd goes would outlive the test), then stop the daemons."""
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True)
        deadline = time.monotonic() + 30
        while self.queue() and time.monotonic() < deadline:
            time.sleep(0.5)
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
