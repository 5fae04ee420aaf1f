"""attnbench as a user installs it: a wheel built from this repository, installed (not editable)
into a fresh virtual environment, every command run from an empty directory."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from fixtures import MEASURE

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    if check:
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv holding attnbench's wheel; its dependencies (torch and the rest, already
    installed for the tests) are reached through a .pth file, so nothing is downloaded and
    the checkout is not on its path."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp / "dist",
        ROOT,
        cwd=tmp,
    )
    (wheel,) = (tmp / "dist").glob("attnbench-*.whl")
    env = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp)
    python = env / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        wheel,
        cwd=tmp,
    )
    return env


def test_the_installed_wheel_runs_every_command_from_an_empty_directory(venv, tmp_path):
    bin_ = venv / "bin"
    where = run(
        bin_ / "python",
        "-c",
        "import harness, attention_zoo as z; print(harness.__file__); print(len(z.available()))",
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(venv)) and not where.stdout.startswith(str(ROOT))
    version = run(bin_ / "attnbench", "--version", cwd=tmp_path).stdout.strip()
    assert version == "attnbench 0.1.0"
    assert run(bin_ / "attnbench-check", "--version", cwd=tmp_path).stdout.strip() == version
    sweep = run(
        bin_ / "attnbench",
        "sweep=smoke",
        "resolution=32",
        "model.depth=1",
        "hydra.sweep.dir=runs/smoke",
        *MEASURE,  # the report, as a user gets it
        cwd=tmp_path,
    )
    assert "report: reports/smoke/report.html" in sweep.stdout
    rows = [json.loads(p.read_text()) for p in (tmp_path / "runs/smoke").rglob("result.json")]
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert {(r["git_sha"], r["attnbench_version"]) for r in rows} == {("", "0.1.0")}
    assert all(str(venv) in r["attention_source"] for r in rows)
    report = run(bin_ / "attnbench-report", "runs/smoke", "--out", "again", cwd=tmp_path)
    assert (tmp_path / "again" / "report.html").is_file(), report.stdout
    check = run(
        bin_ / "attnbench-check",
        "--baseline",
        "runs/smoke/results.csv",
        "--current",
        "runs/smoke",
        "--exact-only",
        cwd=tmp_path,
    )
    assert "attnbench-check: OK: 3 cells compared" in check.stdout
    doctor = run(bin_ / "attnbench-doctor", cwd=tmp_path, check=False)
    verdict = doctor.stdout.strip().splitlines()[-1]  # the exit code says what the verdict says
    assert verdict.startswith(
        {0: "attnbench-doctor: OK", 1: "attnbench-doctor: UNTRUSTWORTHY"}[doctor.returncode]
    ), doctor.stderr
    written = {p.name for p in venv.rglob("*") if p.name in ("runs", "reports", ".revisions")}
    assert not written  # user data stays in the working directory, never in site-packages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "reports", "runs"]
