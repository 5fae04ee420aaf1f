"""Another git revision's attention_zoo, measured by this checkout's harness: a same-run A/B.

Both sides of an A/B sweep are measured by the same measuring code, interleaved cell by cell, so
the machine's noise falls on both alike. A revision is resolved to its commit once (a moving HEAD
cannot change a sweep halfway), its attention_zoo/ is exported with `git archive` into
runs/.revisions/<sha>/, and the measuring process imports the zoo from there instead of ours.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "runs" / ".revisions"
PACKAGE = "attention_zoo"


class RevisionError(ValueError):
    """A revision that cannot be measured; the message names it and why."""


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, timeout=60)


def resolve(ref: str) -> str:
    """The commit a ref names, as 12 hex digits; RevisionError when there is none."""
    done = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0:
        where = f"the git repository at {REPO}" if (REPO / ".git").exists() else f"{REPO}"
        raise RevisionError(
            f"revision {ref!r} does not exist in {where}; give a commit, branch or tag "
            "(e.g. revision=HEAD~1,HEAD)"
        )
    return done.stdout.decode().strip()[:12]


def export(sha: str) -> Path:
    """runs/.revisions/<sha>, holding that commit's attention_zoo/ (made once, atomically)."""
    target = CACHE / sha
    if (target / PACKAGE / "__init__.py").is_file():
        return target
    done = _git("archive", "--format=tar", sha, PACKAGE)
    if done.returncode != 0:
        raise RevisionError(f"revision {sha} has no {PACKAGE}/: {done.stderr.decode().strip()}")
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha}.", dir=CACHE))
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            archive.extractall(staging, filter="data")
        else:
            archive.extractall(staging)  # our own repository's archive: trusted
    try:
        staging.rename(target)
    except OSError:  # another job exported it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def activate(sha: str) -> None:
    """In a measuring process: make `import attention_zoo` give that revision's zoo."""
    root = export(sha)
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    import attention_zoo

    if Path(attention_zoo.__file__ or "").resolve().parent != (root / PACKAGE).resolve():
        raise RevisionError(f"could not load the attention_zoo of {sha} from {root}")
