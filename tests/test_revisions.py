"""A/B of any repository: `revision=A,B` measures the package of the mechanism under test at two
commits of the git repository the command runs in, with the installed measuring code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from fixtures import FAST, attnbench
from plugins import env, installed

FAST_MECHANISM = """
from torch import Tensor

from attention_zoo import Attention, register


@register("slowable", tier="O(N)", paper="a throwaway plugin", arxiv="")
class Slowable(Attention):
    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        return v.mean(-2, keepdim=True).expand_as(v)
"""
# The second commit adds real work (CPU-bound, so the cell's threads stay busy and its timing
# stays trustworthy): several times the whole step at this size.
SLOW_MECHANISM = FAST_MECHANISM.replace(
    "        return v.mean",
    "        for _ in range(8):\n"
    "            torch.ones(192, 192) @ torch.ones(192, 192)\n"
    "        return v.mean",
).replace("from torch import Tensor", "import torch\nfrom torch import Tensor")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def plugin_repository(tmp_path: Path) -> Path:
    """A git repository holding a plugin package: commit 1 fast, commit 2 slow."""
    repo = tmp_path / "plugin-repo"
    (repo / "slowpkg").mkdir(parents=True)
    (repo / "slowpkg" / "__init__.py").write_text("")
    (repo / "slowpkg" / "attention.py").write_text(FAST_MECHANISM)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "fast")
    (repo / "slowpkg" / "attention.py").write_text(SLOW_MECHANISM)
    git(repo, "commit", "-qam", "slow")
    return repo


def test_an_ab_of_a_plugin_repository_names_the_slowed_mechanism(tmp_path):
    repo = plugin_repository(tmp_path)
    site = installed(
        tmp_path / "site", "slowpkg", "0.1", {"slowable": "slowpkg.attention:Slowable"}
    )
    sweep = tmp_path / "ab"
    done = attnbench(
        "sweep=ab",
        "attention=slowable,softmax",
        "resolution=32",
        "model.depth=1",
        "trials=8",  # the fewest paired trials whose signed-rank test survives Holm over 6
        "revision=HEAD~1,HEAD",
        f"hydra.sweep.dir={sweep}",
        *FAST,
        cwd=repo,  # refs resolve here, in the plugin's repository
        env=env(site, repo),  # the plugin as an editable install of this repository has it
    )
    assert done.returncode == 0, done.stderr
    first, second = (
        git(repo, "rev-parse", "--short=12", "HEAD~1"),
        git(repo, "rev-parse", "--short=12", "HEAD"),
    )
    assert f"revision HEAD~1 ({first}): slowpkg at {first} of {repo} (slowpkg/)" in done.stdout
    assert f"attention_zoo as installed ({repo} at {first} does not hold it)" in done.stdout
    table = pd.read_csv(sweep / "results.csv")
    assert set(table["status"]) == {"ok"} and set(table["revision_repo"]) == {str(repo)}
    assert set(table["revision"]) == {first, second}
    plugin = table[table["attention"] == "slowable"]
    exports = {str(repo / "runs" / ".revisions" / f"slowpkg@{s}") for s in (first, second)}
    assert {next(e for e in exports if e in src) for src in plugin["attention_source"]} == exports
    # the same code in 16 processes: torch's allocator peak to the byte (resident memory varies)
    assert table.loc[table["attention"] == "softmax", "peak_mem_bytes"].nunique() == 1
    check = subprocess.run(
        [sys.executable, "-m", "harness.reporting.check", "--ab", str(sweep)],
        capture_output=True,
        text=True,
    )
    verdict = check.stdout.strip().splitlines()[-1]
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"A/B HEAD~1 ({first}) -> HEAD ({second})" in verdict
    regressed = verdict.split(": ", 2)[2]
    assert "slowable small(depth=1) 32px" in regressed and "softmax" not in regressed


def test_a_repository_that_holds_none_of_the_mechanisms_is_refused(tmp_path):
    repo = tmp_path / "empty-repo"
    repo.mkdir()
    (repo / "README").write_text("nothing to measure\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    done = attnbench("sweep=smoke", "revision=HEAD", f"hydra.sweep.dir={tmp_path}/s", cwd=repo)
    assert done.returncode == 2
    assert "holds none of the packages under test (attention_zoo)" in done.stderr
    named = attnbench(
        "sweep=smoke",
        "revision=HEAD",
        "revision_package=attention_zoo",
        f"hydra.sweep.dir={tmp_path}/s",
        cwd=repo,
    )
    assert named.returncode == 2 and "has no package 'attention_zoo'" in named.stderr
    assert not list(tmp_path.rglob("result.json"))
