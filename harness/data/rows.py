"""The result row: its columns, what makes two rows the same cell, atomic writes, reading back.

Everything that stores or compares rows (resume, OOM skipping, the check, the report) uses the
identity defined here. This module imports neither torch nor matplotlib.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Status:
    """What a row's status means to everything that reads rows."""

    name: str
    rank: int  # higher is worse: a cell's trials aggregate, and the check compares, by it
    kept: bool  # a resumed sweep keeps the row; otherwise it measures the cell again
    stops_larger: bool  # larger sizes of the same cell are recorded `skipped_oom`, not run
    marker: str  # how a figure marks where a mechanism stopped ('' : not marked)
    meaning: str


STATUSES = {
    s.name: s
    for s in (
        Status("ok", 0, True, False, "", "measured"),
        Status(
            "skipped_oom",
            1,
            True,
            False,
            "",
            "not run: a smaller size ran out of memory or hit a kernel's size limit",
        ),
        Status("kernel_limit", 2, True, True, "^", "a kernel's size limit: grid, 32-bit indexing"),
        Status("oom", 3, True, True, "x", "out of memory, with evidence"),
        Status("error", 4, False, False, "", "crashed, timed out or stopped: measured again"),
    )
}
OK = STATUSES["ok"].name
STOPPED = tuple(s.name for s in STATUSES.values() if s.marker)  # where a mechanism stopped


def status(name: Any) -> Status:
    """A status by name; an unknown one (another tool's rows) counts as an error."""
    return STATUSES.get(str(name), STATUSES["error"])


ROW_FILE = "result.json"
RESULTS = "results.csv"
TRACEBACK_FILE = "traceback.txt"
SCHEMA_VERSION = 5
# v3 added revision_repo, attention_source, attnbench_version; v4 the host_energy_* columns;
# v5 malloc and peak_rss_bytes (a CPU row's peak_mem_bytes is then torch's allocator's, its
# mem_source says which)
READABLE_VERSIONS = (2, 3, 4, 5)

KINDS = ("str", "int", "float", "bool", "json")
GROUPS: tuple[str, ...] = ("identity", "sample", "outcome", "timing", "energy", "memory")
GROUPS += ("state", "provenance", "bookkeeping")  # bookkeeping: overrides, time, schema version


@dataclass(frozen=True)
class Gate:
    """How attnbench-check judges a column: `exact` (must not change), or `ratio` (current /
    baseline with an interval, within a tolerance in the direction of worse)."""

    how: str  # exact | ratio
    higher_is_better: bool = False
    tolerance: float = 0.0  # ratio: the default allowed change
    samples: str = "trials"  # ratio: "steps" (a window's step times exist) or "trials"
    stat: str = "median"  # ratio, steps: the statistic of one window's steps (median or mean)
    timed: bool = True  # ratio: untrustworthy timing makes it inconclusive
    normalised: bool = True  # ratio: divided by the reference mechanism under --normalise
    # ratio: columns saying how the value was measured; sides that differ in one are not compared
    sources: tuple[str, ...] = ("allocator_conf",)


EXACT = Gate("exact")


@dataclass(frozen=True)
class Column:
    """Everything attnbench knows about one column of a row, in one place: the schema, the CSV
    reader, the aggregation over trials, the check's metric table and the README's column table
    are all made from these. Adding a column is one entry."""

    name: str
    kind: str  # one of KINDS: what a reader turns the CSV text back into
    group: str  # one of GROUPS
    meaning: str
    unit: str = ""
    aggregate: str = "first"  # over a cell's ok trials: median | all (bool: every trial) | first
    gate: Gate | None = None  # how attnbench-check judges it (None: not at all)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.group not in GROUPS:
            raise ValueError(f"column {self.name}: kind in {KINDS}, group in {GROUPS}")
        if self.aggregate not in ("first", "median", "all"):
            raise ValueError(f"column {self.name}: aggregate first, median or all")


STATUS_MEANING = ", ".join(f"{s.name} ({s.meaning})" for s in STATUSES.values())

# The README's column table is made from this: `python -m harness.data.rows` prints it and a test
# keeps the README equal to it.
COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column(
            "attention",
            "str",
            "identity",
            "mechanism: its registered name (built-in or plugin) or its import path",
        ),
        Column(
            "attention_options",
            "json",
            "identity",
            "the mechanism's options that differ from its defaults (JSON object; {}: all at their "
            "defaults), so an option added later does not change older rows' identity",
        ),
        Column(
            "model",
            "str",
            "identity",
            "model preset (attention_zoo.PRESETS), e.g. small; `small(depth=8)` when its shape was"
            " changed",
        ),
        Column("depth", "int", "identity", "transformer blocks"),
        Column("dim", "int", "identity", "embedding width"),
        Column("heads", "int", "identity", "attention heads"),
        Column("patch_size", "int", "identity", "patch side in pixels", unit="px"),
        Column("mlp_ratio", "float", "identity", "MLP hidden width / dim"),
        Column(
            "resolution",
            "int",
            "identity",
            "image width in pixels (and height, unless `height` differs)",
            unit="px",
        ),
        Column("height", "int", "identity", "image height in pixels", unit="px"),
        Column("tokens", "int", "identity", "patch tokens per image"),
        Column("batch_size", "int", "identity", "images per step"),
        Column(
            "mode",
            "str",
            "identity",
            "infer (forward under inference_mode) or train (forward + backward + AdamW step)",
        ),
        Column(
            "dtype",
            "str",
            "identity",
            "float32, bfloat16 or float16 (infer: model and input cast; train: autocast)",
        ),
        Column("device", "str", "identity", "torch device the cell ran on (cpu, cuda:N)"),
        Column("compile", "bool", "identity", "whether the model went through torch.compile"),
        Column(
            "compile_mode",
            "str",
            "identity",
            "torch.compile's mode when not its default (reduce-overhead: CUDA graphs; "
            "max-autotune, max-autotune-no-cudagraphs); empty: default or not compiled",
        ),
        Column("tf32", "bool", "identity", "TF32 matmuls and convolutions allowed"),
        Column("threads", "int", "identity", "torch intra-op threads the cell ran with"),
        Column(
            "malloc",
            "str",
            "identity",
            "CPU cells: glibc's malloc policy when not the default (system: glibc's own "
            "thresholds); empty: steady, see allocator_conf",
        ),
        Column(
            "trial",
            "int",
            "sample",
            "which independent measurement of the cell this row is (0, 1, ...)",
        ),
        Column(
            "revision",
            "str",
            "sample",
            "git commit of the mechanism's package that was measured (empty: the installed code)",
        ),
        Column("revision_repo", "str", "sample", "the git repository that commit is from"),
        Column(
            "attention_kernel",
            "str",
            "provenance",
            "what ran the token mixing, where the mechanism can tell: sdpa's backend as torch "
            "chose it (flash, efficient, cudnn, math) or as pinned (attention.backend=...)",
        ),
        Column(
            "attention_source",
            "str",
            "outcome",
            "where the mechanism's code came from: module, how it was found (built-in, entry point"
            " of a distribution and its version, import path) and its file",
        ),
        Column(
            "status",
            "str",
            "outcome",
            STATUS_MEANING,
            gate=EXACT,
        ),
        Column(
            "error",
            "str",
            "outcome",
            "why the cell is not ok (empty when ok); the traceback is in the job directory",
        ),
        Column(
            "params",
            "int",
            "outcome",
            "trainable parameters of the model at this resolution",
            gate=EXACT,
        ),
        Column(
            "macs",
            "int",
            "outcome",
            "multiply-accumulates of one forward per image (contractions only; fvcore)",
            unit="MAC/img",
            gate=EXACT,
        ),
        Column("flops", "int", "outcome", "2 x macs", unit="FLOP/img", gate=EXACT),
        Column(
            "latency_ms",
            "float",
            "timing",
            "median time of one step (one batch), ms",
            unit="ms",
            aggregate="median",
            gate=Gate("ratio", tolerance=0.10, samples="steps"),
        ),
        Column(
            "latency_ms_p10",
            "float",
            "timing",
            "10th percentile step time, ms",
            unit="ms",
            aggregate="median",
        ),
        Column(
            "latency_ms_p90",
            "float",
            "timing",
            "90th percentile step time, ms",
            unit="ms",
            aggregate="median",
        ),
        Column("iters", "int", "timing", "steps in the timed window"),
        Column(
            "window_s",
            "float",
            "timing",
            "wall seconds of the timed window (energy is read over the same window)",
            unit="s",
        ),
        Column(
            "step_times_ms",
            "json",
            "timing",
            "every timed step, ms, in order (JSON list): the raw samples of the check",
            unit="ms",
        ),
        Column(
            "throughput_img_s",
            "float",
            "timing",
            "images per second over the timed window (batch x steps / time)",
            unit="img/s",
            aggregate="median",
            gate=Gate("ratio", higher_is_better=True, tolerance=0.10, samples="steps", stat="mean"),
        ),
        Column(
            "timing_valid",
            "bool",
            "timing",
            "false when the window's timing cannot be trusted (CPU contention, GPU throttling; "
            "thresholds in the README)",
            aggregate="all",
        ),
        Column(
            "gpu_busy_share",
            "float",
            "timing",
            "GPU cells: the share of the window in which the GPU ran kernels (NVML utilisation, "
            "sampled); under 0.8 the cell is launch-bound and timing_note says so",
            aggregate="median",
        ),
        Column(
            "timing_note",
            "str",
            "timing",
            "the evidence: CPU share, run-queue wait, switches, load; GPU clocks, throttle "
            "reasons, temperature; first why timing_valid is false",
        ),
        Column(
            "energy_j_per_img",
            "float",
            "energy",
            "energy per image over the window, J: the device's whole draw, idle power included "
            "(what the wall pays; empty when not measured)",
            unit="J/img",
            aggregate="median",
            gate=Gate("ratio", tolerance=0.10, sources=("energy_source", "allocator_conf")),
        ),
        Column(
            "energy_above_idle_j_per_img",
            "float",
            "energy",
            "energy per image above idle: energy_j_per_img less idle_power_w x the window, J "
            "(what the cell adds to an idle device; empty without an idle measurement)",
            unit="J/img",
            aggregate="median",
        ),
        Column(
            "sampled_energy_j_per_img",
            "float",
            "energy",
            "NVML power samples (instant-power field where the driver has it) integrated over the "
            "same window, J/img: the counter's cross-check",
            unit="J/img",
            aggregate="median",
        ),
        Column(
            "dram_energy_j_per_img",
            "float",
            "energy",
            "RAPL DRAM energy per image, J (CPU, where exposed)",
            unit="J/img",
        ),
        Column(
            "avg_power_w",
            "float",
            "energy",
            "energy / window seconds, W",
            unit="W",
            aggregate="median",
        ),
        Column(
            "idle_power_w",
            "float",
            "energy",
            "power before the cell, nothing running, W",
            unit="W",
            aggregate="median",
        ),
        Column(
            "energy_source",
            "str",
            "energy",
            "counter used (nvml:total_energy_counter, nvml:power_sampling, rapl:package) or "
            "'unavailable: <reason>'",
        ),
        Column(
            "energy_resolution",
            "float",
            "energy",
            "a lower bound on the uncertainty of energy_j_per_img: the counter's read timing "
            "only, as a fraction (over 0.01 makes energy_valid false); the sensor may see part "
            "of the runtime (A100/H100: ~25%, arXiv 2312.02741), which it does not include",
        ),
        Column(
            "energy_valid",
            "bool",
            "energy",
            "false when the counter's resolution exceeds 1%, it did not advance, or a process "
            "appeared on the GPU during the window",
            aggregate="all",
        ),
        Column(
            "energy_note",
            "str",
            "energy",
            "why energy_valid is false, and how power was sampled and the counter's measured step",
        ),
        Column(
            "host_energy_j_per_img",
            "float",
            "energy",
            "GPU cells: the host's CPU package energy (RAPL) per image over the same window, J; "
            "its own counter, beside the GPU's (empty without a readable RAPL counter)",
            unit="J/img",
            aggregate="median",
        ),
        Column(
            "host_dram_energy_j_per_img",
            "float",
            "energy",
            "GPU cells: the host's RAPL DRAM energy per image, J (where exposed)",
            unit="J/img",
        ),
        Column(
            "host_energy_source",
            "str",
            "energy",
            "GPU cells: the host's energy counter (rapl:package) or 'unavailable: <reason>'",
        ),
        Column(
            "host_energy_valid",
            "bool",
            "energy",
            "GPU cells: false when the host's counter did not advance or the window was too short",
            aggregate="all",
        ),
        Column("host_energy_note", "str", "energy", "GPU cells: why host_energy_valid is false"),
        Column(
            "peak_mem_bytes",
            "int",
            "memory",
            "peak memory of the cell, bytes: on a GPU the caching allocator's peak (weights and "
            "input in); on the CPU the peak of what torch's allocator held for one step beyond "
            "what it held before (the step's own allocations)",
            unit="B",
            aggregate="median",
            gate=Gate(
                "ratio",
                tolerance=0.05,
                timed=False,
                normalised=False,
                sources=("mem_source", "allocator_conf"),
            ),
        ),
        Column(
            "mem_source",
            "str",
            "memory",
            "how peak memory was read (cuda:max_memory_allocated, cpu:step_allocations_peak; "
            "rows before v5: cpu:vmhwm..., the resident high-water mark)",
        ),
        Column(
            "peak_rss_bytes",
            "int",
            "memory",
            "CPU cells: the resident high-water mark over warm-up and window beyond the "
            "process's start (VmHWM reset at the start, library pages left out); it also "
            "depends on malloc's state",
            unit="B",
            aggregate="median",
        ),
        Column(
            "reserved_mem_bytes",
            "int",
            "memory",
            "GPU cells: the CUDA caching allocator's peak reserved memory, bytes (allocated plus "
            "what its segments hold free: what the device had to give)",
            unit="B",
            aggregate="median",
        ),
        Column(
            "allocator_conf",
            "str",
            "memory",
            "GPU cells: PYTORCH_CUDA_ALLOC_CONF as the cell's process ran with it (empty: "
            "torch's defaults; gpu.expandable_segments=true adds expandable_segments:True); "
            "CPU cells: glibc's malloc thresholds in force (malloc=steady or system)",
        ),
        Column(
            "compile_s",
            "float",
            "timing",
            "seconds of warm-up including torch.compile (never timed)",
            unit="s",
        ),
        Column(
            "harness_s",
            "float",
            "bookkeeping",
            "wall seconds of the whole cell, process start and FLOP count included",
            unit="s",
            aggregate="median",
        ),
        Column("device_name", "str", "provenance", "GPU name or CPU model"),
        Column(
            "device_uuid", "str", "provenance", "GPU UUID (NVML is addressed by it, not by index)"
        ),
        Column("driver_version", "str", "provenance", "NVIDIA driver"),
        Column("cuda_version", "str", "provenance", "CUDA version torch was built with"),
        Column("cudnn_version", "str", "provenance", "cuDNN version"),
        Column(
            "tf32_matmul", "bool", "provenance", "torch.backends.cuda.matmul.allow_tf32 as measured"
        ),
        Column("tf32_cudnn", "bool", "provenance", "torch.backends.cudnn.allow_tf32 as measured"),
        Column("cudnn_benchmark", "bool", "provenance", "torch.backends.cudnn.benchmark"),
        Column("cuda_visible_devices", "str", "provenance", "CUDA_VISIBLE_DEVICES of the job"),
        Column("power_limit_w", "float", "provenance", "enforced GPU power limit, W", unit="W"),
        Column("sm_clock_mhz", "int", "state", "SM clock when the cell started, MHz", unit="MHz"),
        Column(
            "mem_clock_mhz",
            "int",
            "state",
            "memory clock when the cell started, MHz",
            unit="MHz",
        ),
        Column(
            "temperature_c",
            "float",
            "state",
            "GPU temperature when the cell started, C",
            unit="C",
        ),
        Column(
            "window_start_temperature_c",
            "int",
            "state",
            "GPU cells: the GPU's temperature when the timed window began, C",
            unit="C",
        ),
        Column(
            "idle_before_s",
            "float",
            "state",
            "GPU cells: seconds since the previous cell on this GPU ended its window (empty: none "
            "on record); a short gap means it started warm from that cell",
            unit="s",
        ),
        Column(
            "settle_s",
            "float",
            "state",
            "GPU cells: seconds waited for the temperature to settle before the idle power was "
            "measured (at most energy.settle_s)",
            unit="s",
        ),
        Column(
            "settled",
            "bool",
            "state",
            "GPU cells: whether the temperature settled (moved at most 1 C over 3 reads 0.5 s "
            "apart) within energy.settle_s; false: the cell started while it still changed",
        ),
        Column(
            "gpu_processes",
            "int",
            "state",
            "other compute processes on the GPU when the cell started (its own not counted; "
            "empty where the driver cannot list them)",
        ),
        Column("torch_version", "str", "provenance", "torch version"),
        Column("python_version", "str", "provenance", "Python version"),
        Column("cpu_model", "str", "provenance", "CPU model"),
        Column("hostname", "str", "provenance", "machine name"),
        Column(
            "attnbench_version",
            "str",
            "provenance",
            "version of the installed attnbench that measured the row",
        ),
        Column(
            "git_sha",
            "str",
            "provenance",
            "attnbench commit when run from a git checkout ('+dirty' with uncommitted changes; "
            "empty for an installed wheel)",
        ),
        Column("timestamp", "str", "bookkeeping", "UTC time the cell started"),
        Column("overrides", "str", "bookkeeping", "the Hydra overrides of the job"),
        Column("schema_version", "int", "bookkeeping", "version of this column set"),
    )
}

# What makes two rows the same cell. The device counts by class (cpu / cuda), so a resumed sweep
# may land on another GPU of the machine; trial and revision are not part of it: trials are
# repeated samples of one cell, and an A/B run compares one cell across revisions.
IDENTITY = (
    "attention",
    "attention_options",
    "model",
    "depth",
    "dim",
    "heads",
    "patch_size",
    "mlp_ratio",
    "resolution",
    "height",
    "batch_size",
    "mode",
    "dtype",
    "device",
    "compile",
    "compile_mode",
    "tf32",
    "threads",
    "malloc",
)
SIZE = ("resolution", "height")  # identity columns that only change the cell's size
# Identity columns set by the machine rather than the code: status, params and FLOPs do not
# depend on them, so the exact check matches cells without them (a baseline travels).
MACHINE = ("threads",)
EXACT_IDENTITY = tuple(c for c in IDENTITY if c not in MACHINE)
SAMPLE = ("revision", "trial")  # which measurement of a cell a row is, within one sweep

MEDIANS = tuple(c.name for c in COLUMNS.values() if c.aggregate == "median")
GATED = {c.name: c for c in COLUMNS.values() if c.gate is not None}


def truth(value: Any) -> bool:
    """A boolean as a row holds it: True, or 'true' in any case after a CSV round trip."""
    return value is True or str(value).strip().lower() == "true"


def falsity(value: Any) -> bool:
    """Explicitly false (an empty value is neither true nor false)."""
    return value is False or str(value).strip().lower() == "false"


def device_class(device: Any) -> str:
    """'cuda:3' -> 'cuda'; the one reduction of a device to its kind."""
    return str(device).partition(":")[0]


def cell_words(row: Mapping[str, Any], options: str = "") -> str:
    """A cell in words, as progress lines and the check name it; `options` is already worded
    by the caller (the check cannot ask the zoo for defaults without importing torch)."""
    return (
        f"{row['attention']}{options} {row['model']} {row['resolution']}px "
        f"b{row['batch_size']} {row['mode']} {row['dtype']} {device_class(row['device'])}"
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def canonical(column: str, value: Any) -> Any:
    """One spelling per value, whether a row came from JSON, a CSV or a config."""
    if _missing(value) and column != "attention_options":
        return None
    if column == "attention_options":
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return json.dumps(dict(value or {}), sort_keys=True)
    if column == "device":
        return device_class(value)
    kind = COLUMNS[column].kind if column in COLUMNS else "str"
    if kind == "bool":
        return truth(value)
    if kind == "int":
        return int(float(value))
    if kind == "float":
        return float(value)
    return str(value)


def identity(row: Mapping[str, Any], columns: Iterable[str] = IDENTITY) -> str:
    """The cell a row measured, as a string key (a subset of IDENTITY with `columns`)."""
    return json.dumps({c: canonical(c, row.get(c)) for c in columns}, sort_keys=True)


def sample_key(row: Mapping[str, Any]) -> str:
    """The cell and which measurement of it (revision, trial): what resume keeps."""
    return identity(row, IDENTITY + SAMPLE)


def check_columns(row: Mapping[str, Any]) -> None:
    """A row holds only documented columns: a misspelt key fails here, not in a report."""
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"row has undocumented columns {unknown}; documented: rows.COLUMNS")


def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null rather than numbers that are not numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    return value


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_atomic(target: Path, data: bytes) -> Path:
    """Readers see the whole file or the old one, never a part (temp file, fsync, rename).

    The file gets the mode a plain open() would give (0666 less the umask), not mkstemp's 0600,
    so colleagues can read a sweep on a shared filesystem.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json(target: Path, payload: Any) -> Path:
    return write_atomic(target, json.dumps(clean(payload), indent=1, default=str).encode())


def write_row(job_dir: Path, row: Mapping[str, Any]) -> Path:
    """The row as result.json in its job directory, every column present (null: not measured)."""
    check_columns(row)
    ordered = {key: row.get(key) for key in COLUMNS} | {"schema_version": SCHEMA_VERSION}
    return write_json(job_dir / ROW_FILE, ordered)


def read_row(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        row: dict[str, Any] = json.load(handle)
    return row


def row_files(source: Path) -> list[Path]:
    """Every result.json under a directory, at any depth (a sweep, a single run, a tree)."""
    return sorted(source.rglob(ROW_FILE))


def read_rows(source: Path) -> list[dict[str, Any]]:
    """Rows under a directory; unreadable ones (a job killed mid-write leaves none) are skipped."""
    found = []
    for path in row_files(source):
        try:
            found.append(read_row(path))
        except (OSError, ValueError):
            continue
    return found


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame in column order; options and step times as JSON strings (CSV cells)."""
    table = pd.DataFrame(rows)
    for column in ("attention_options", "step_times_ms"):
        if column in table:
            table[column] = table[column].map(
                lambda v: v if isinstance(v, str) or v is None else json.dumps(v)
            )
    known = [c for c in COLUMNS if c in table]
    return table[known + [c for c in table if c not in COLUMNS]]


def read_csv(path: Path) -> pd.DataFrame:
    """A results.csv with each column's type as it went in (numbers as numbers, booleans as
    booleans, empty as missing), whatever pandas would have guessed."""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    for name in table.columns.intersection(list(COLUMNS)):
        kind = COLUMNS[name].kind
        if kind in ("int", "float"):
            table[name] = pd.to_numeric(table[name], errors="coerce")
            if kind == "int" and table[name].dropna().mod(1).eq(0).all():
                table[name] = table[name].astype("Int64")
        elif kind == "bool":
            table[name] = table[name].map(lambda v: None if pd.isna(v) else truth(v)).astype(object)
    return table


def collect(source: Path) -> pd.DataFrame:
    """A run's rows from a results.csv file or from the result.json files under a directory
    (falling back to its results.csv when the job directories are gone). Writes nothing."""
    if source.is_file():
        return read_csv(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    rows = read_rows(source)
    if rows:
        return frame(rows)
    if (source / RESULTS).is_file():
        return read_csv(source / RESULTS)
    raise FileNotFoundError(f"no {ROW_FILE} under {source} (at any depth) and no {RESULTS}")


def write_results(sweep_dir: Path) -> tuple[Path, pd.DataFrame]:
    """The sweep's results.csv, built from its job directories."""
    table = collect(sweep_dir)
    return write_atomic(sweep_dir / RESULTS, table.to_csv(index=False).encode()), table


def markdown_columns() -> str:
    """The README's column table."""

    def checked(c: Column) -> str:
        if c.gate is None:
            return ""
        if c.gate.how == "exact":
            return "exact"
        better = "higher" if c.gate.higher_is_better else "lower"
        return f"ratio, {better} is better, {c.gate.tolerance:.0%}"

    lines = ["| column | group | type | unit | over trials | checked | meaning |"]
    lines.append("|---|---|---|---|---|---|---|")
    lines += [
        f"| `{c.name}` | {c.group} | {c.kind} | {c.unit} | {c.aggregate} | {checked(c)} | "
        f"{c.meaning} |"
        for c in COLUMNS.values()
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_columns())
