"""Plugin packages as Python finds installed ones: a package directory beside a `.dist-info`
with its entry points, on the path of the process that runs attnbench."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "attnbench-relu-linear"


def installed(site: Path, dist: str, version: str, entry_points: dict[str, str]) -> Path:
    """`site` as a site directory holding distribution `dist` with these mechanism entry points
    (what pip writes for a package with `[project.entry-points."attnbench.mechanisms"]`)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[attnbench.mechanisms]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def example(site: Path) -> Path:
    """The example plugin of examples/, installed into `site`."""
    shutil.copytree(EXAMPLE / "relu_linear_attention", site / "relu_linear_attention")
    return installed(
        site,
        "attnbench-relu-linear",
        "0.1.0",
        {"relu_linear": "relu_linear_attention.attention:ReluLinear"},
    )


def env(*sites: Path) -> dict[str, str]:
    """The environment of a process that sees these site directories."""
    path = os.pathsep.join([*map(str, sites), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path.rstrip(os.pathsep))
