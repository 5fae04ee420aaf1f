"""A new mechanism is one file in attention_zoo/: discovered, configurable from its constructor,
measured through the CLI alone and inside every "all mechanisms" sweep, with nothing else edited.

The packages are copied into a scratch directory with the new file added, so the checkout is
never touched; `python -m harness` run there imports the copies.
"""

import json
import shutil
from pathlib import Path

import pytest
from fixtures import FAST, attnbench
from plugins import env, example

import attention_zoo as zoo

ROOT = Path(__file__).resolve().parent.parent

THROWAWAY = '''
"""A throwaway mechanism: mean pooling of the values, scaled."""

from torch import Tensor

from .base import Attention
from .registry import register


@register("throwaway", tier="O(N)", paper="none", arxiv="0000.00000")
class Throwaway(Attention):
    def __init__(self, dim: int, num_heads: int, scale: float = 1.0) -> None:
        super().__init__(dim, num_heads)
        self.scale = scale

    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        return (self.scale * v.mean(-2, keepdim=True)).expand_as(v)
'''

BROKEN = """
from torch import Tensor

from .base import Attention
from .registry import register


@register("broken", tier="O(N)", paper="none", arxiv="0000.00000")
class Broken(Attention):
    def mix(self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[int, int]) -> Tensor:
        raise ArithmeticError("broken on purpose")
"""


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkout")
    for part in ("attention_zoo", "harness", "conf"):
        shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "attention_zoo" / "throwaway.py").write_text(THROWAWAY)
    (root / "attention_zoo" / "broken.py").write_text(BROKEN)
    return root


def rows_under(path: Path) -> dict[str, dict]:
    return {
        r["attention"]: r for r in map(json.loads, map(Path.read_text, path.rglob("result.json")))
    }


def test_a_new_file_is_a_new_mechanism_with_its_options(checkout):
    done = attnbench(
        "hydra.mode=RUN",
        "attention=throwaway",
        "attention.scale=0.5",
        "resolution=32",
        "hydra.run.dir=runs/one",
        *FAST,
        cwd=checkout,
    )
    assert done.returncode == 0, done.stderr
    row = rows_under(checkout / "runs" / "one")["throwaway"]
    assert row["status"] == "ok" and row["throughput_img_s"] > 0
    assert row["attention_options"] == {"scale": 0.5}
    assert str(checkout / "runs" / "one" / "result.json") in done.stdout


def test_every_mechanism_sweep_includes_it_and_a_failing_one_keeps_its_traceback(
    checkout, tmp_path
):
    """The default sweep, with two new files in the zoo and a plugin installed beside it."""
    done = attnbench(
        "sweep=quick",
        "resolution=32",
        "model.depth=1",
        "hydra.sweep.dir=runs/all",
        *FAST,
        cwd=checkout,
        env=env(example(tmp_path / "site")),
    )
    assert done.returncode == 0, done.stderr
    found = rows_under(checkout / "runs" / "all")
    assert set(found) == {*zoo.available(), "throwaway", "broken", "relu_linear"}
    total = len(found)
    assert f"[{total}/{total}]" in done.stdout
    assert all(r["model"] == "small(depth=1)" for r in found.values())  # not labelled `small`
    assert found["relu_linear"]["status"] == "ok"
    assert found["throwaway"]["status"] == "ok"
    broken = found["broken"]
    assert broken["status"] == "error"
    assert broken["error"] == "ArithmeticError: broken on purpose"
    assert broken["params"] > 0 and broken["flops"] is None  # counted; cannot be traced
    (job,) = [
        p.parent for p in (checkout / "runs" / "all").rglob("result.json") if "broken" in str(p)
    ]
    trace = (job / "traceback.txt").read_text()
    assert trace.startswith("Traceback") and 'broken.py", line' in trace
