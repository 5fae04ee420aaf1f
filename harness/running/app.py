"""`attnbench`: the Hydra app. Each job turns its config into a cell, measures it in a process of
its own, and writes the cell's row as result.json in its job directory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import attention_zoo as zoo
from harness import config, paths
from harness.data import rows
from harness.data.store import RunStore
from harness.measuring import cell, provenance
from harness.running import gpus, sweep, worker

stopping: list[dict[str, Any]] = []  # a cell stopped by SIGTERM: write its row, then stop too
STORES: dict[Path, RunStore] = {}  # the sweep this process's jobs belong to


def cell_timeout(timeout_s: float, budget: tuple[float, str] | None) -> tuple[float, str]:
    """The cell's own timeout, counted from now and covering its measuring process's start:
    `timeout_s`, but inside what is left of the launcher's time budget since the job started,
    less a margin (5%, at least 10 s) for writing its row, so a cell that runs too long is
    recorded as timed out instead of its job being killed. Zero or less: no time is left."""
    if budget is None:
        return timeout_s, "timeout_s"
    seconds, where = budget
    age = job_age()
    inside = seconds - age - max(10.0, 0.05 * seconds)
    if inside >= timeout_s:
        return timeout_s, "timeout_s"
    return inside, f"timeout_s, kept inside {where}; the job started {age:.0f} s ago"


def job_age(proc: Path = Path("/proc")) -> float:
    """Seconds since the job started: under SLURM, since its oldest process of the same job id
    (the batch script; this process starts later, after the job step is set up); elsewhere,
    since this process started."""
    job = os.environ.get("SLURM_JOB_ID")
    pid, oldest = os.getpid(), process_age(proc / "self")
    while job is not None and pid > 1:
        try:
            pid = int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / str(pid) / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            break
        if f"SLURM_JOB_ID={job}".encode() not in environ:
            break
        oldest = max(oldest, process_age(proc / str(pid)))
    return oldest


def process_age(process: Path = Path("/proc/self")) -> float:
    """Seconds since a process started (the job's start-up counts against its limit)."""
    try:
        ticks = int((process / "stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def measure(cfg: config.Config, uuid: str | None = None) -> tuple[dict[str, Any], str]:
    """The cell's complete row and the traceback of its failure ('' when none). Never raises
    for what happens while measuring: that is the row's status. `uuid`: the leased GPU."""
    start = time.perf_counter()
    row = cell.fields(cfg) | provenance.host()
    timeout, why = cell_timeout(cfg.timeout_s, launcher_limit())
    outcome = worker.run("harness.measuring.measure:measure", (cfg, uuid), timeout, why)
    row |= outcome.fields
    row["status"], row["error"] = outcome.status, outcome.message
    row["harness_s"] = time.perf_counter() - start
    if outcome.terminated:
        stopping.append(row)
    return row, outcome.traceback


def launcher_limit() -> tuple[float, str] | None:
    """The seconds a job may run under its launcher (sweep.launcher_budget), and how that was
    worked out."""
    if not HydraConfig.initialized():
        return None
    return sweep.launcher_budget(HydraConfig.get().launcher)


def leased(cfg: config.Config) -> tuple[dict[str, Any], str]:
    """On a GPU, hold a free GPU for the whole measurement (one measured job per GPU)."""
    if not cfg.device.startswith("cuda") or not cfg.gpu.lease:
        return measure(cfg)
    try:
        held = gpus.lease(gpus.candidates(cfg.device), Path(cfg.gpu.lock_dir), cfg.gpu.wait_s)
    except (gpus.NoFreeGpu, OSError) as err:
        return cell.fields(cfg) | provenance.host() | {"status": "error", "error": str(err)}, ""
    try:
        cfg.device = held.device
        return measure(cfg, held.key)
    finally:
        held.release()


def in_sweep(cfg: config.Config, sweep_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """None when an earlier run of the sweep kept this measurement; `skipped_oom` when the same
    cell already ran out of memory at fewer tokens; otherwise the measured row."""
    wanted = cell.fields(cfg)
    siblings = RunStore(sweep_dir).entries(wanted)
    done = sweep.previous(wanted, siblings)
    if done is not None:
        print(f"resumed: {cell.describe(done)} (measured by an earlier run)", flush=True)
        return None, ""
    oom = sweep.smaller_oom(wanted, siblings)
    if oom is not None:
        counted = worker.run("harness.measuring.measure:count", (cfg,), cfg.timeout_s)
        return wanted | provenance.host() | counted.fields | {
            "status": "skipped_oom",
            "error": f"not run: {oom['status']} at {oom['resolution']}px already",
        }, counted.traceback
    return leased(cfg)


def progress(sweep_dir: Path, index: int, cfg: config.Config) -> str:
    """'[k/n] elapsed, ETA' from the sweep's plan; the ETA weighs each cell by its expected cost
    (`cost`), so the large cells at the end of a resolution sweep are not counted as small."""
    plan = STORES.setdefault(sweep_dir, RunStore(sweep_dir)).plan  # read once per process
    jobs = plan.get("jobs", [])
    text = f"[{index + 1}/{len(jobs) or '?'}]"
    if jobs and "started" in plan:
        elapsed = time.time() - plan["started"]
        weights = [cost(job, cfg) for job in jobs]
        done = sum(weights[: index + 1])
        eta = elapsed / done * sum(weights[index + 1 :]) if done > 0 else 0.0
        text += f" {_clock(elapsed)} elapsed, ~{_clock(eta)} left"
    return text


def cost(job: list[str], cfg: config.Config) -> float:
    """A cell's relative cost, from its overrides over this job's settings: tokens to the
    power of its mechanism's tier (2 for O(N^2), else 1), times depth, batch and 3 for a
    training step. For the ETA only: the measurement never depends on it."""
    given = dict(item.split("=", 1) for item in job if "=" in item)

    def number(key: str, default: float) -> float:
        try:
            return float(given.get(key, default))
        except ValueError:
            return default

    side = number("resolution", cfg.resolution)
    preset = zoo.PRESETS.get(given.get("model", ""), {})
    patch = number("model.patch_size", preset.get("patch_size", cfg.model.patch_size))
    depth = number("model.depth", preset.get("depth", cfg.model.depth))
    tokens = max(side // max(patch, 1), 1) ** 2
    name = given.get("attention", cfg.attention_name)
    try:
        exponent = 2 if "N^2" in zoo.info(name).tier else 1
    except ValueError:  # a name this process does not know: counted as linear
        exponent = 1
    train = 3 if given.get("mode", cfg.mode) == "train" else 1
    return float(tokens**exponent * depth * number("batch_size", cfg.batch_size) * train)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}"


@hydra.main(config_path=str(paths.config_dir()), config_name="config", version_base=None)
def job(raw: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    cfg: config.Config = OmegaConf.to_object(raw)  # type: ignore[assignment]
    trace = ""
    try:
        cell.validate(cfg)
    except cell.CellError as err:
        if not multirun:
            print(f"attnbench: error: {err}", file=sys.stderr)
            sys.exit(2)
        row: dict[str, Any] | None = cell.fields(cfg) | {"status": "invalid", "error": str(err)}
    else:
        if multirun:
            row, trace = in_sweep(cfg, Path(hydra_cfg.sweep.dir))
        else:
            row, trace = leased(cfg)
    if row is None:
        return
    if row["status"] == "invalid":  # bad input, found here or by the measuring process
        if not multirun:
            print(f"attnbench: error: {row['error']}", file=sys.stderr)
            sys.exit(2)
        row["status"] = "error"
    row["overrides"] = " ".join(hydra_cfg.overrides.task)
    if multirun:
        path = RunStore(Path(hydra_cfg.sweep.dir)).record(job_dir, row)
    else:
        path = rows.write_row(job_dir, row)
    if trace:
        rows.write_atomic(job_dir / rows.TRACEBACK_FILE, trace.encode())
    if multirun:
        print(f"{progress(Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, cfg)} {cell.describe(row)}")
    else:
        print(f"{cell.describe(row)}\nrow: {path}")
    sys.stdout.flush()
    if stopping:
        print(f"attnbench: stopped by SIGTERM; the cell's row says so: {path}", file=sys.stderr)
        raise worker.Terminated(str(path))


def quote_revisions(argv: list[str]) -> list[str]:
    """`revision=HEAD~1,HEAD` as Hydra's grammar needs it (`~` and `^` only inside quotes)."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key.lstrip("+") == "revision" and eq and value[:1] not in ("'", '"'):
            refs = value.split(",")
            arg = f"{key}=" + ",".join(r if r == "null" else f"'{r}'" for r in refs)
        out.append(arg)
    return out


def named_mechanisms(argv: list[str]) -> list[str]:
    """The `attention=` values of the command line (lists and choice() included; glob() picks
    from what is registered anyway), read with Hydra's own override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    try:
        overrides = OverridesParser.create().parse_overrides(argv)
    except Exception:  # noqa: BLE001  (Hydra reports its own syntax errors, later)
        return []
    names: list[str] = []
    for override in overrides:
        if override.get_key_element().lstrip("+") != "attention":
            continue
        if override.is_sweep_override() and override.is_discrete_sweep():
            if override.value_type != ValueType.GLOB_CHOICE_SWEEP:
                names += list(override.sweep_string_iterator())
        elif not override.is_sweep_override():
            names.append(override.get_value_element_as_str())
    return names


def load_mechanisms(argv: list[str]) -> list[str]:
    """Plugins found, those named by import path loaded; a named one that cannot be used ends
    the run (exit 2) with one line saying why, a broken plugin not named is only warned of."""
    named = named_mechanisms(argv)
    adhoc = []
    for name in named:
        try:
            found = zoo.info(name)
        except zoo.ContractError as err:
            valid = ", ".join(zoo.available())
            print(f"attnbench: error: {err}; valid choices: {valid}", file=sys.stderr)
            sys.exit(2)
        except ValueError as err:  # an unknown name: the message lists the choices
            print(f"attnbench: error: {err}", file=sys.stderr)
            sys.exit(2)
        if found.origin == "import path":
            adhoc.append(name)
    for name, why in zoo.problems().items():
        print(f"attnbench: warning: mechanism {name!r} left out: {why}", file=sys.stderr)
    return adhoc


def setup(named: list[str]) -> None:
    """Hydra's side: the attnbench sweeper (Hydra's scan finds plugins in hydra_plugins
    directories; an editable install has none) and the configs (harness.config.register)."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.attnbench_sweeper import AttnbenchSweeper

    Plugins.instance().register(AttnbenchSweeper)
    config.register(named)


def main() -> None:
    """The console script."""
    argv = quote_revisions(sys.argv[1:])
    if "--version" in argv:
        print(f"attnbench {paths.version()}")
        return
    setup(load_mechanisms(argv))
    sys.argv[1:] = argv
    job()
