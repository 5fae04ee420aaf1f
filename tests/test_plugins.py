"""Mechanisms from other packages: found by entry point or named by import path, checked against
the contract before anything is measured, and measured like the built-ins."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures import FAST, attnbench
from plugins import env, example, installed

import attention_zoo as zoo
from harness.running import app

SCALED = '''
from torch import Tensor

from attention_zoo import Attention


class Scaled(Attention):
    """Not registered anywhere: named by its import path only."""

    tier = "O(N)"

    def __init__(self, dim: int, num_heads: int, scale: float = 1.0) -> None:
        super().__init__(dim, num_heads)
        self.scale = scale

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        return (self.scale * v.mean(-2, keepdim=True)).expand_as(v)
'''

# Each breaks one clause of the contract; the message must name it.
BROKEN = {
    "not_a_module": ("class Bad:\n    pass\n", "is not an nn.Module subclass"),
    "no_qkv": (
        """
        from torch import nn

        class Bad(nn.Module):
            def __init__(self, dim, num_heads):
                super().__init__()
                self.q = nn.Linear(dim, dim)
                self.proj = nn.Linear(dim, dim)

            def forward(self, x, hw):
                return x

            def mix(self, q, k, v, hw):
                return v
        """,
        "has no qkv: nn.Linear(64, 192) (the timm layout",
    ),
    "forward_signature": (
        """
        from attention_zoo import Attention

        class Bad(Attention):
            def forward(self, x):
                return x

            def mix(self, q, k, v, hw):
                return v
        """,
        "Bad.forward(x) must be forward(x, hw)",
    ),
    "mix_signature": (
        """
        from attention_zoo import Attention

        class Bad(Attention):
            def mix(self, q, k, v):
                return v
        """,
        "Bad.mix(q, k, v) must be mix(q, k, v, hw)",
    ),
    "fails_to_import": (
        "import a_dependency_that_is_not_installed\n",
        "fails to import: No module named 'a_dependency_that_is_not_installed'",
    ),
    "built_in_name": (
        """
        from attention_zoo import Attention, register

        @register("softmax", tier="O(N^2)", paper="", arxiv="")
        class Bad(Attention):
            def mix(self, q, k, v, hw):
                return v
        """,
        "the name 'softmax' is taken by attention_zoo.softmax (built-in)",
    ),
}


def rows_under(path: Path) -> dict[str, dict]:
    return {
        r["attention"]: r for r in map(json.loads, map(Path.read_text, path.rglob("result.json")))
    }


@pytest.fixture
def site(tmp_path):
    return tmp_path / "site"


def test_an_installed_plugin_is_listed_and_measured_like_a_built_in(tmp_path, site):
    example(site)
    listed = subprocess.run(
        [sys.executable, "-c", "import attention_zoo as z; print(z.available())"],
        capture_output=True,
        text=True,
        env=env(site),
        check=True,
    )
    names = eval(listed.stdout)  # noqa: S307  (a list literal we printed)
    assert "relu_linear" in names and set(zoo.available()) < set(names)
    assert names.index("relu_linear") > names.index("softmax")  # ordered by its tier, O(N)
    done = attnbench(
        "hydra.mode=RUN",
        "attention=relu_linear",
        "attention.eps=0.001",
        "resolution=32",
        "hydra.run.dir=one",
        *FAST,
        cwd=tmp_path,
        env=env(site),
    )
    assert done.returncode == 0, done.stderr
    row = rows_under(tmp_path / "one")["relu_linear"]
    assert row["status"] == "ok" and row["throughput_img_s"] > 0 and row["flops"] > 0
    assert row["attention_options"] == {"eps": 0.001}
    assert "entry point of attnbench-relu-linear 0.1.0" in row["attention_source"]
    assert str(site / "relu_linear_attention") in row["attention_source"]


def test_a_class_named_by_its_import_path_is_measured_with_its_options(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "__init__.py").write_text("")
    (tmp_path / "mine" / "layers.py").write_text(SCALED)
    done = attnbench(
        "hydra.mode=RUN",
        "attention=mine.layers.Scaled",
        "attention.scale=0.5",
        "resolution=32",
        "hydra.run.dir=one",
        *FAST,
        cwd=tmp_path,
        env=env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    row = rows_under(tmp_path / "one")["mine.layers.Scaled"]
    assert row["status"] == "ok" and row["attention_options"] == {"scale": 0.5}
    assert row["attention_source"].startswith("mine.layers (import path;")
    bad = attnbench(
        "hydra.mode=RUN",
        "attention=mine.layers.Scaled",
        "attention.scal=2",
        cwd=tmp_path,
        env=env(tmp_path),
    )
    assert bad.returncode != 0 and "scal" in bad.stderr


@pytest.mark.parametrize("case", BROKEN, ids=BROKEN)
def test_a_class_that_breaks_the_contract_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys, case
):
    """What `attnbench attention=<path>` does before anything else (app.load_mechanisms)."""
    source, message = BROKEN[case]
    (tmp_path / f"bad_{case}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = zoo.available()
    with pytest.raises(SystemExit) as stopped:
        app.load_mechanisms(["hydra.mode=RUN", f"attention=bad_{case}.Bad"])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("attnbench: error: ") and message in line, line
    assert "valid choices: " in line and "linear_infsa" in line
    assert zoo.available() == before  # nothing half-registered


def test_the_command_line_refuses_a_broken_class_before_measuring(tmp_path):
    (tmp_path / "bad.py").write_text(textwrap.dedent(BROKEN["mix_signature"][0]))
    done = attnbench("hydra.mode=RUN", "attention=bad.Bad", cwd=tmp_path, env=env(tmp_path))
    assert done.returncode == 2 and not list(tmp_path.rglob("result.json"))
    assert done.stderr.startswith("attnbench: error: bad.Bad.mix(q, k, v) must be mix(q, k, v, hw)")


def test_a_broken_plugin_is_left_out_and_the_built_ins_keep_working(tmp_path, site):
    (site / "clash").mkdir(parents=True)
    (site / "clash" / "__init__.py").write_text(textwrap.dedent(BROKEN["built_in_name"][0]))
    installed(site, "clash", "1.0", {"softmax": "clash:Bad", "gone": "clash_missing:Nothing"})
    done = attnbench(
        "hydra.mode=RUN",
        "attention=softmax",
        "resolution=32",
        "hydra.run.dir=one",
        *FAST,
        cwd=tmp_path,
        env=env(site),
    )
    assert done.returncode == 0, done.stderr
    row = rows_under(tmp_path / "one")["softmax"]
    assert "built-in" in row["attention_source"]  # the built-in, not the clashing plugin
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert any(
        "'softmax' left out: entry point of clash 1.0: the name 'softmax' is taken" in w
        for w in warnings
    )
    assert any("'gone' left out" in w and "clash_missing" in w for w in warnings)
    named = attnbench("hydra.mode=RUN", "attention=gone", cwd=tmp_path, env=env(site))
    assert named.returncode == 2
    assert "attention 'gone' cannot be used: entry point of clash 1.0" in named.stderr
