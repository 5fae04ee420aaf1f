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
        Status("skipped_oom", 1, True, False, "", "not run: a smaller size ran out of memory"),
        Status("kernel_limit", 2, True, False, "^", "a kernel's size limit: grid, 32-bit indexing"),
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
SCHEMA_VERSION = 3
READABLE_VERSIONS = (2, 3)  # v3 added revision_repo, attention_source, attnbench_version

# column -> meaning. The README's column table is this dict: `python -m harness.rows` prints it
# and a test keeps the README equal to it.
COLUMNS: dict[str, str] = {
    "attention": "mechanism: its registered name (built-in or plugin) or its import path",
    "attention_options": "the mechanism's options as given (JSON object)",
    "model": "model preset (attention_zoo.PRESETS), e.g. small; `small(depth=8)` when its "
    "shape was changed",
    "depth": "transformer blocks",
    "dim": "embedding width",
    "heads": "attention heads",
    "patch_size": "patch side in pixels",
    "mlp_ratio": "MLP hidden width / dim",
    "resolution": "image width in pixels (and height, unless `height` differs)",
    "height": "image height in pixels",
    "tokens": "patch tokens per image",
    "batch_size": "images per step",
    "mode": "infer (forward under inference_mode) or train (forward + backward + AdamW step)",
    "dtype": "float32, bfloat16 or float16 (infer: model and input cast; train: autocast)",
    "device": "torch device the cell ran on (cpu, cuda:N)",
    "compile": "whether the model went through torch.compile",
    "tf32": "TF32 matmuls and convolutions allowed",
    "threads": "torch intra-op threads the cell ran with",
    "trial": "which independent measurement of the cell this row is (0, 1, ...)",
    "revision": "git commit of the mechanism's package that was measured (empty: the installed "
    "code)",
    "revision_repo": "the git repository that commit is from",
    "attention_source": "where the mechanism's code came from: module, how it was found "
    "(built-in, entry point of a distribution and its version, import path) and its file",
    "status": ", ".join(f"{s.name} ({s.meaning})" for s in STATUSES.values()),
    "error": "why the cell is not ok (empty when ok); the traceback is in the job directory",
    "params": "trainable parameters of the model at this resolution",
    "macs": "multiply-accumulates of one forward per image (contractions only; fvcore)",
    "flops": "2 x macs",
    "latency_ms": "median time of one step (one batch), ms",
    "latency_ms_p10": "10th percentile step time, ms",
    "latency_ms_p90": "90th percentile step time, ms",
    "iters": "steps in the timed window",
    "window_s": "wall seconds of the timed window (energy is read over the same window)",
    "step_times_ms": "every timed step, ms, in order (JSON list): the raw samples of the check",
    "throughput_img_s": "images per second over the timed window (batch x steps / time)",
    "timing_valid": "false when the window's timing cannot be trusted (CPU contention, GPU "
    "throttling; thresholds in the README)",
    "timing_note": "the evidence: CPU share, run-queue wait, switches, load; GPU clocks, "
    "throttle reasons, temperature; first why timing_valid is false",
    "energy_j_per_img": "energy per image over the window, J (empty when not measured)",
    "sampled_energy_j_per_img": "NVML power samples (instant-power field where the driver has "
    "it) integrated over the same window, J/img: the counter's cross-check",
    "dram_energy_j_per_img": "RAPL DRAM energy per image, J (CPU, where exposed)",
    "avg_power_w": "energy / window seconds, W",
    "idle_power_w": "power before the cell, nothing running, W",
    "energy_source": "counter used (nvml:total_energy_counter, nvml:power_sampling, "
    "rapl:package) or 'unavailable: <reason>'",
    "energy_resolution": "uncertainty of energy_j_per_img from the counter's steps, as a "
    "fraction (over 0.01 makes energy_valid false)",
    "energy_valid": "false when the counter's resolution exceeds 1%, it did not advance, or a "
    "process appeared on the GPU during the window",
    "energy_note": "why energy_valid is false, and how power was sampled and the counter's "
    "measured step",
    "peak_mem_bytes": "peak memory of the cell, bytes",
    "mem_source": "how peak memory was read (cuda:max_memory_allocated, cpu:vmhwm...)",
    "compile_s": "seconds of warm-up including torch.compile (never timed)",
    "harness_s": "wall seconds of the whole cell, process start and FLOP count included",
    "device_name": "GPU name or CPU model",
    "device_uuid": "GPU UUID (NVML is addressed by it, not by index)",
    "driver_version": "NVIDIA driver",
    "cuda_version": "CUDA version torch was built with",
    "cudnn_version": "cuDNN version",
    "tf32_matmul": "torch.backends.cuda.matmul.allow_tf32 as measured",
    "tf32_cudnn": "torch.backends.cudnn.allow_tf32 as measured",
    "cudnn_benchmark": "torch.backends.cudnn.benchmark",
    "cuda_visible_devices": "CUDA_VISIBLE_DEVICES of the job",
    "power_limit_w": "enforced GPU power limit, W",
    "sm_clock_mhz": "SM clock when the cell started, MHz",
    "mem_clock_mhz": "memory clock when the cell started, MHz",
    "temperature_c": "GPU temperature when the cell started, C",
    "gpu_processes": "compute processes on the GPU when the cell started",
    "torch_version": "torch version",
    "python_version": "Python version",
    "cpu_model": "CPU model",
    "hostname": "machine name",
    "attnbench_version": "version of the installed attnbench that measured the row",
    "git_sha": "attnbench commit when run from a git checkout ('+dirty' with uncommitted "
    "changes; empty for an installed wheel)",
    "timestamp": "UTC time the cell started",
    "overrides": "the Hydra overrides of the job",
    "schema_version": "version of this column set",
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
    "tf32",
    "threads",
)
SIZE = ("resolution", "height")  # identity columns that only change the cell's size
# Identity columns set by the machine rather than the code: status, params and FLOPs do not
# depend on them, so the exact check matches cells without them (a baseline travels).
MACHINE = ("threads",)
EXACT_IDENTITY = tuple(c for c in IDENTITY if c not in MACHINE)
SAMPLE = ("revision", "trial")  # which measurement of a cell a row is, within one sweep

_INTEGER = {"depth", "dim", "heads", "patch_size", "resolution", "height", "batch_size"}
_INTEGER |= {"threads", "trial", "tokens"}
_BOOLEAN = {"compile", "tf32"}


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
    if column in _BOOLEAN:
        return value if isinstance(value, bool) else str(value).strip().lower() == "true"
    if column in _INTEGER:
        return int(float(value))
    if column == "mlp_ratio":
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


def collect(source: Path) -> pd.DataFrame:
    """A run's rows from a results.csv file or from the result.json files under a directory
    (falling back to its results.csv when the job directories are gone). Writes nothing."""
    if source.is_file():
        return pd.read_csv(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    rows = read_rows(source)
    if rows:
        return frame(rows)
    if (source / RESULTS).is_file():
        return pd.read_csv(source / RESULTS)
    raise FileNotFoundError(f"no {ROW_FILE} under {source} (at any depth) and no {RESULTS}")


def write_results(sweep_dir: Path) -> tuple[Path, pd.DataFrame]:
    """The sweep's results.csv, built from its job directories."""
    table = collect(sweep_dir)
    return write_atomic(sweep_dir / RESULTS, table.to_csv(index=False).encode()), table


def markdown_columns() -> str:
    """The README's column table."""
    lines = ["| column | meaning |", "|---|---|"]
    return "\n".join(lines + [f"| `{column}` | {text} |" for column, text in COLUMNS.items()])


if __name__ == "__main__":
    print(markdown_columns())
