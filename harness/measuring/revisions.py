"""Another git revision of the package that provides a mechanism, measured by this installation's
measuring code: a same-run A/B of any repository.

The package is the one the mechanism under test comes from (attention_zoo for the built-ins, a
plugin's own package otherwise, or `revision_package`); refs are resolved in the git repository
of the current directory (or `revision_repo`). Each (package, commit) is resolved once and
exported once, with `git archive`, into runs/.revisions/<package>@<sha>/ under the current
directory, beside a source.json saying where it came from; the measuring process imports the
package from there instead of the installed one and checks that it did.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import paths
from harness.data import rows

BUILT_IN = "attention_zoo"
SOURCE_FILE = "source.json"


class RevisionError(ValueError):
    """A revision that cannot be measured; the message names it and why."""


@dataclass(frozen=True)
class Export:
    """One package at one commit, exported: `root` goes first on sys.path."""

    package: str
    sha: str
    repo: str  # the git repository's top level
    path: str  # the package's directory inside the repository at that commit ('': not in it)
    root: str

    @property
    def installed(self) -> bool:
        """The repository does not hold the package: a reference mechanism of an A/B, measured
        from the installed code on both sides."""
        return not self.path

    def describe(self) -> str:
        if self.installed:
            return f"{self.package} as installed ({self.repo} at {self.sha} does not hold it)"
        return f"{self.package} at {self.sha} of {self.repo} ({self.path}/)"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=60)


def repository(given: str | None = None) -> Path:
    """The top level of the git repository `given` names, else of the current directory's."""
    where = Path(given).expanduser() if given else Path.cwd()
    if not where.is_dir():
        raise RevisionError(f"revision_repo {where} is not a directory")
    try:
        done = _git(where, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError) as err:
        raise RevisionError(f"git cannot be run: {err}") from None
    if done.returncode != 0:
        hint = "" if given else " (the current directory); run from it or set revision_repo=PATH"
        raise RevisionError(f"{where} is not inside a git repository{hint}")
    return Path(done.stdout.decode().strip()).resolve()


def resolve(ref: str, repo: Path) -> str:
    """The commit a ref names in `repo`, as 12 hex digits; RevisionError when there is none."""
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0:
        raise RevisionError(
            f"revision {ref!r} does not exist in the git repository at {repo}; give a commit, "
            "branch or tag (e.g. revision=HEAD~1,HEAD)"
        )
    return done.stdout.decode().strip()[:12]


def package_of(mechanism: str) -> str:
    """The top-level package a mechanism comes from, as installed here."""
    import attention_zoo as zoo

    try:
        return zoo.info(mechanism).package or BUILT_IN
    except ValueError:  # unknown here (e.g. new in the revision): an import path names it
        return mechanism.partition(".")[0] if "." in mechanism else BUILT_IN


def _installed_path(package: str, repo: Path) -> str | None:
    """Where the installed package sits inside `repo`, if it was installed from it (editable)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        try:
            return Path(location).resolve().relative_to(repo).as_posix()
        except ValueError:
            continue
    return None


def locate(package: str, sha: str, repo: Path) -> str:
    """The package's directory inside `repo` at `sha`: where the installed copy sits in it, else
    <package>/ or src/<package>/."""
    tried = [p for p in (_installed_path(package, repo), package, f"src/{package}") if p]
    for path in dict.fromkeys(tried):
        if _git(repo, "cat-file", "-e", f"{sha}:{path}/__init__.py").returncode == 0:
            return path
    raise RevisionError(
        f"revision {sha} of {repo} has no package {package!r} (looked for "
        f"{', '.join(p + '/__init__.py' for p in dict.fromkeys(tried))}); set revision_repo= to "
        "the repository that holds it, or revision_package= to the package to export"
    )


def cached(package: str, sha: str) -> Export | None:
    """An export made earlier (by this sweep's planner, usually), or None."""
    source = paths.REVISIONS.resolve() / f"{package}@{sha}" / SOURCE_FILE
    try:
        return Export(**json.loads(source.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def export(package: str, ref: str, repo: Path, reference_ok: bool = False) -> Export:
    """`package` at `ref` of `repo`, exported once into runs/.revisions/<package>@<sha>.

    `reference_ok`: a package the repository does not hold is recorded as measured from the
    installed code (a sweep's reference mechanisms: softmax beside a plugin under test)."""
    sha = resolve(ref, repo)
    done = cached(package, sha)
    if done is not None and (reference_ok or not done.installed):
        return done
    cache = paths.REVISIONS.resolve()
    target = cache / f"{package}@{sha}"
    try:
        path = locate(package, sha, repo)
    except RevisionError:
        if not reference_ok:
            raise
        reference = Export(package, sha, str(repo), "", "")
        rows.write_json(target / SOURCE_FILE, asdict(reference))
        return reference
    parent, _, name = path.rpartition("/")
    tree = f"{sha}:{parent}" if parent else sha
    archive = _git(repo, "archive", "--format=tar", tree, name)
    if archive.returncode != 0:
        raise RevisionError(f"git archive of {path} at {sha} failed: {archive.stderr.decode()}")
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package}@{sha}.", dir=cache))
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(staging, filter="data")
        else:
            tar.extractall(staging)  # noqa: S202  (git's own archive of a named tree)
    result = Export(package, sha, str(repo), path, str(target))
    (staging / SOURCE_FILE).write_text(json.dumps(asdict(result)))
    try:
        staging.rename(target)
    except OSError:  # another process exported it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return result


def activate(done: Export) -> None:
    """In a measuring process: make `import <package>` give the exported revision."""
    if done.installed:
        return
    package, root = done.package, Path(done.root)
    import attention_zoo

    if package != BUILT_IN:  # the registry stays; the plugin's mechanisms are registered anew
        attention_zoo.registry.forget(package)
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    module = __import__(package)
    if Path(module.__file__ or "").resolve().parent != (root / package).resolve():
        raise RevisionError(f"could not load {done.describe()} from {root}")
