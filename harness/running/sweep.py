"""A sweep is a Hydra multirun over cells, planned and launched by the `attnbench` sweeper
(hydra_plugins.attnbench_sweeper, a thin class over `run` here).

The sweeper expands the sweep with Hydra's public override parser (so `glob(*)`, `range(...)`
and `choice(...)` work, and `[k/n]` is exact), writes the plan, hands every job to the configured
launcher, and afterwards builds results.csv, a summary and the report from the rows in the job
directories, whatever the launcher did. Each job consults its siblings' rows through the helpers
below: to resume, and to skip what is sure to run out of memory.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig

from harness.data import rows
from harness.data.store import DOCTOR_TEXT, RunStore

INNERMOST = "revision"  # varies fastest, so the two sides of an A/B run alternate cell by cell


class PlanError(ValueError):
    """The sweep cannot be enumerated: the message says which override and why."""


ORDERS = ("grid", "shuffled")


def expand(
    overrides: Sequence[Override], trials: int, order: str = "grid", seed: int = 0
) -> list[list[str]]:
    """Every job's overrides: the product of the sweeps, repeated `trials` times; with
    order=shuffled each round of the grid in a seeded random order (the A/B sides of a cell
    stay together), so that what ran before a cell, and how hot it left the device, varies.

    Trials go round the whole grid (all cells once, then all again), so the repeats of one cell
    are apart in time and a burst of noise cannot hit all of them. The A/B sides of a cell run
    back to back, A first in even trials and B first in odd ones, so an effect of going first
    or second cancels out of the paired comparison.
    """
    values: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise PlanError(
                    f"{override.input_line}: interval sweeps cannot be enumerated; use a list "
                    "(a,b,c), glob(...), range(...) or choice(...)"
                )
            values[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        if key in ("trial", "trials") and len(values[key]) > 1:
            raise PlanError(f"{key} cannot be swept; set trials=N for N measurements of each cell")
        if not values[key]:
            raise PlanError(f"{override.input_line}: matches no value")
    values.pop("trials", None)
    values.pop("trial", None)
    keys = sorted(values, key=lambda k: k == INNERMOST)  # stable: INNERMOST last
    grid = [list(job) for job in itertools.product(*(values[k] for k in keys))]
    if trials < 1:
        raise PlanError(f"trials must be >= 1, got {trials}")
    if order not in ORDERS:
        raise PlanError(f"unknown order {order!r}; valid choices: {', '.join(ORDERS)}")
    sides = len(values.get(INNERMOST, [None]))
    blocks = [grid[start : start + sides] for start in range(0, len(grid), sides)]
    rng = random.Random(seed)
    out = []
    for t in range(trials):
        if order == "shuffled":
            rng.shuffle(blocks)
        for block in blocks:
            sided = block[::-1] if t % 2 else block
            out += [job + [f"trial={t}"] if trials > 1 else job for job in sided]
    return out


def pin_revisions(
    jobs: list[list[str]], defaults: DictConfig
) -> tuple[list[list[str]], list[dict[str, str]]]:
    """Each `revision=REF` resolved to its commit once for the whole sweep, in the repository of
    the current directory (or `revision_repo`), and the package of each job's mechanism
    exported once at that commit; `revision=null` is the installed code. Returns the jobs and
    the revisions in the order given (the first is the A/B baseline)."""
    from harness.measuring import revisions

    pinned: dict[str, str] = {}
    exported: dict[tuple[str, str], revisions.Export] = {}
    out = []
    for job in jobs:
        given = {k: v.strip("'\"") for k, _, v in (o.partition("=") for o in job)}
        ref = given.get("revision")
        if ref is None or ref == "null":
            if ref is not None:
                pinned.setdefault(ref, "")
            out.append(job)
            continue
        mechanism = given.get("attention", str(defaults.attention.name))
        package = given.get("revision_package") or defaults.get("revision_package")
        named = package is not None  # a package named explicitly must be in the repository
        try:
            repo = revisions.repository(given.get("revision_repo") or defaults.get("revision_repo"))
            package = package or revisions.package_of(mechanism)
            if ref not in pinned:
                pinned[ref] = revisions.resolve(ref, repo)
            if (package, pinned[ref]) not in exported:
                done = revisions.export(package, pinned[ref], repo, reference_ok=not named)
                exported[package, pinned[ref]] = done
                print(f"attnbench: revision {ref} ({pinned[ref]}): {done.describe()}", flush=True)
        except revisions.RevisionError as err:
            raise PlanError(str(err)) from None
        out.append([f"revision={pinned[ref]}" if o.startswith("revision=") else o for o in job])
    if exported and all(done.installed for done in exported.values()):
        held = sorted({done.package for done in exported.values()})
        raise PlanError(
            f"the repository {next(iter(exported.values())).repo} holds none of the packages "
            f"under test ({', '.join(held)}): nothing would differ between the revisions; run "
            "from the repository of the mechanism, or set revision_repo= (or revision_package=)"
        )
    return out, [{"ref": ref, "sha": sha} for ref, sha in pinned.items()]


# sbatch(1), --signal: "Due to the resolution of event handling by Slurm, the signal may be sent
# up to 60 seconds earlier than specified." submitit cannot requeue our jobs (max_num_timeout 0),
# so it ends a job on that signal: a cell must be over before the earliest it can come.
SLURM_SIGNAL_EARLY_S = 60.0


def launcher_budget(launcher: Any) -> tuple[float, str] | None:
    """Seconds a job may run under this launcher: submitit's timeout_min, less the
    signal_delay_s at which submitit signals (and so stops) the job, and on SLURM less the 60 s
    by which SLURM may send that signal early. None: no limit."""
    minutes = launcher.get("timeout_min") if launcher is not None else None
    if not minutes:
        return None
    delay = float(launcher.get("signal_delay_s") or 0)
    early = SLURM_SIGNAL_EARLY_S if "Slurm" in str(launcher.get("_target_", "")) else 0.0
    where = f"the launcher's {float(minutes):g}-min limit"
    if delay:
        where += f" less its {delay:g} s signal delay"
    if early:
        where += f"{' and' if delay else ' less'} the {early:g} s early SLURM may send it"
    return 60.0 * float(minutes) - delay - early, where


def write_plan(
    store: RunStore, name: str, jobs: list[list[str]], revisions: list[dict[str, str]]
) -> None:
    store.write_plan(
        {
            "sweep_name": name,
            "started": time.time(),
            "jobs": [" ".join(j) for j in jobs],
            "revisions": revisions,
        }
    )


def run(
    context: HydraContext,
    config: DictConfig,
    launcher: Launcher,
    params: dict[str, str],
    arguments: list[str],
) -> list[JobReturn]:
    """The sweep: plan it, launch every job, then aggregate and report whatever happened."""
    sweep_dir = Path(config.hydra.sweep.dir)
    parser = OverridesParser.create(config_loader=context.config_loader)
    try:
        wanted = [f"{k}={v}" for k, v in params.items()] + list(arguments)
        jobs, revisions = pin_revisions(
            expand(
                parser.parse_overrides(wanted),
                int(config.trials),
                str(config.order),
                int(config.order_seed),
            ),
            config,
        )
        budget = launcher_budget(config.hydra.get("launcher"))
        if budget is not None and budget[0] < 30:
            raise PlanError(
                f"hydra.launcher leaves each job {budget[0]:g} s ({budget[1]}): not enough to "
                "start a cell and record it; raise timeout_min or lower signal_delay_s"
            )
    except PlanError as err:
        print(f"attnbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        write_plan(RunStore(sweep_dir), str(config.sweep_name), jobs, revisions)
    except OSError as err:  # progress loses its denominator; measuring goes on
        print(f"attnbench: warning: could not write the sweep plan: {err}", file=sys.stderr)
    print(f"attnbench: {len(jobs)} cells -> {sweep_dir}", flush=True)
    if config.doctor:
        environment(sweep_dir)
    returns: list[JobReturn] = []
    try:
        returns = list(launcher.launch(jobs, initial_job_idx=0))
    except Exception as err:  # a launcher failure: what ran is on disk, aggregate it
        print(f"attnbench: the launcher failed: {err!r}", file=sys.stderr)
    except SystemExit:  # stopped (SIGTERM): still leave results.csv for what was measured
        finish(sweep_dir, str(config.sweep_name), jobs, bool(config.report))
        raise
    for job in returns:
        try:
            job.return_value  # noqa: B018  (raises the job's exception when it failed)
        except Exception as err:
            print(f"attnbench: a job failed outside its cell: {err!r}", file=sys.stderr)
    finish(sweep_dir, str(config.sweep_name), jobs, bool(config.report))
    return returns


def environment(sweep_dir: Path) -> None:
    """attnbench-doctor's findings beside the rows (without its CUDA self-probe, which would
    put a process on the GPU); a failing finding is said up front."""
    from harness.reporting import doctor

    store = RunStore(sweep_dir)
    try:
        result = doctor.examine(sample_s=0.5, probe_self=False)
        store.save_doctor(result, doctor.render(result))
    except Exception as err:  # the sweep is worth more than its environment report
        print(f"attnbench: warning: attnbench-doctor failed: {err!r}", file=sys.stderr)
        return
    if result["exit_code"]:
        print(f"attnbench: warning: {result['verdict']} (see {sweep_dir / DOCTOR_TEXT})")


def finish(sweep_dir: Path, name: str, jobs: list[list[str]], report: bool = True) -> None:
    """results.csv, a summary of the run, and its report (unless `report` is off); exits 1 if no
    results.csv came of it."""
    from harness.reporting.report import render_sweep

    try:
        results, table = RunStore(sweep_dir).write_results()
    except (OSError, ValueError) as err:
        print(f"attnbench: error: no results.csv for {sweep_dir}: {err}", file=sys.stderr)
        sys.exit(1)
    print(summary(table, jobs))
    print(f"rows: {results}")
    if not report:
        print(f"report: not rendered (report=false); attnbench-report {sweep_dir} renders it")
        return
    try:
        page = render_sweep(sweep_dir, table, name)
    except Exception as err:  # the rows are safe on disk; say so and fail loudly
        print(
            f"attnbench: the cells are measured in {results}, but the report failed: {err!r}; "
            "retry with attnbench-report",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"report: {page} (and report.md beside it)")


def summary(table: Any, jobs: list[list[str]]) -> str:
    """Counts by status, and the planned jobs that never wrote a row."""
    counts = table["status"].value_counts().to_dict() if "status" in table else {}
    line = f"{len(table)} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if "timing_valid" in table:
        ok = table[table["status"] == "ok"]
        untrusted = int(ok["timing_valid"].map(rows.falsity).sum())
        line += f"; {untrusted} of {len(ok)} ok cells have untrustworthy timing"
        if untrusted:
            line += " (see timing_note; the check will not call them ok)"
    written = set(table["overrides"].dropna()) if "overrides" in table else set()
    missing = [" ".join(j) for j in jobs if " ".join(j) not in written]
    if missing:
        line += f"\n{len(missing)} planned cells wrote no row: " + "; ".join(missing)
    return line


def previous(cell: dict[str, Any], siblings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of this very measurement (cell, revision, trial) when an earlier run kept it."""
    key = rows.sample_key(cell)
    for row in siblings:
        if rows.status(row.get("status")).kept and rows.sample_key(row) == key:
            return row
    return None


def smaller_oom(cell: dict[str, Any], siblings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A row of the same cell but for its size, at fewer tokens (same revision), whose status
    stops larger sizes (`oom`, `kernel_limit`)."""
    columns = tuple(c for c in rows.IDENTITY + ("revision",) if c not in rows.SIZE)
    key = rows.identity(cell, columns)
    for row in siblings:
        if (
            rows.status(row.get("status")).stops_larger
            and (row.get("tokens") or 0) < cell["tokens"]
            and rows.identity(row, columns) == key
        ):
            return row
    return None
