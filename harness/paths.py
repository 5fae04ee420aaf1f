"""Where attnbench finds its own files and where it keeps the user's.

attnbench's configuration ships inside the package (a wheel installs conf/ as harness/conf); a
checkout keeps it at the top level. User data never lives inside the installed package: runs,
reports and revision exports go under the current directory (runs/, reports/,
runs/.revisions/), and only the GPU lock directory is machine-wide (gpu.lock_dir).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DISTRIBUTION = "attnbench"
RUNS = Path("runs")  # relative: under the directory attnbench runs in
REPORTS = Path("reports")
REVISIONS = RUNS / ".revisions"


def config_dir() -> Path:
    """The Hydra config directory: the packaged copy in a wheel, the checkout's conf/ else."""
    packaged = PACKAGE_DIR / "conf"
    return packaged if (packaged / "config.yaml").is_file() else PACKAGE_DIR.parent / "conf"


def checkout() -> Path | None:
    """The git checkout attnbench runs from (an editable install), None for an installed wheel."""
    root = PACKAGE_DIR.parent
    return root if (root / ".git").exists() and (root / "pyproject.toml").is_file() else None


def version() -> str:
    """attnbench's version as installed ('unknown' when not installed at all)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
