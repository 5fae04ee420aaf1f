"""One cell: a mechanism x model x resolution x batch x mode x dtype x device, measured in a
process of its own so that an OOM, a crash or a leak cannot reach the next cell."""

from __future__ import annotations

import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import attention_zoo as zoo

from .timing import TimingConfig

MODES = ("infer", "train")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CellError(ValueError):
    """Bad input for a cell: the message names the valid choices."""


@dataclass(frozen=True)
class Cell:
    attention: str
    model: str
    depth: int
    dim: int
    heads: int
    patch_size: int
    mlp_ratio: float
    resolution: int
    batch_size: int
    mode: str
    dtype: str
    device: str
    attention_options: dict[str, Any] = field(default_factory=dict)
    height: int | None = None  # non-square images: height x resolution
    compile: bool = False
    tf32: bool = False
    timing: TimingConfig = TimingConfig()
    idle_s: float = 1.0
    sample_interval_s: float = 0.01
    memory_limit_gb: float | None = None
    timeout_s: float = 3600.0

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height or self.resolution, self.resolution)

    @property
    def tokens(self) -> int:
        return (self.hw[0] // self.patch_size) * (self.hw[1] // self.patch_size)

    def build(self) -> zoo.ViT:
        return zoo.ViT(
            self.attention,
            self.depth,
            self.dim,
            self.heads,
            patch_size=self.patch_size,
            mlp_ratio=self.mlp_ratio,
            **self.attention_options,
        )

    def identity(self) -> dict[str, Any]:
        return {
            "attention": self.attention,
            "model": self.model,
            "depth": self.depth,
            "dim": self.dim,
            "heads": self.heads,
            "resolution": self.resolution,
            "height": self.hw[0],
            "tokens": self.tokens,
            "batch_size": self.batch_size,
            "mode": self.mode,
            "dtype": self.dtype,
            "device": self.device,
            "compile": self.compile,
            "tf32": self.tf32,
            "attention_options": dict(sorted(self.attention_options.items())),
        }


def resolve_device(requested: str) -> str:
    """'auto' -> cuda when present, else cpu; a clear CellError for devices this machine lacks."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = requested.partition(":")[2] or "0"
        valid = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
        if not index.isdigit() or int(index) >= count:
            why = "CUDA is not available" if not count else f"this machine has {count} GPU(s)"
            raise CellError(
                f"device {requested!r} is not usable: {why}; valid choices here: {', '.join(valid)}"
            )
        return requested  # "cuda": any free GPU, leased per job (harness.gpus)
    raise CellError(f"unknown device {requested!r}; valid choices: auto, cpu, cuda, cuda:N")


def validate(cell: Cell) -> None:
    """Everything that can be checked before measuring; raises CellError naming valid choices."""
    if cell.attention not in zoo.available():
        raise CellError(
            f"unknown attention {cell.attention!r}; valid choices: {', '.join(zoo.available())}"
        )
    if cell.mode not in MODES:
        raise CellError(f"unknown mode {cell.mode!r}; valid choices: {', '.join(MODES)}")
    if cell.dtype not in DTYPES:
        raise CellError(f"unknown dtype {cell.dtype!r}; valid choices: {', '.join(DTYPES)}")
    if not isinstance(cell.batch_size, int) or cell.batch_size < 1:
        raise CellError(f"batch_size must be an integer >= 1, got {cell.batch_size!r}")
    p = cell.patch_size
    for side in cell.hw:
        if not isinstance(side, int) or side < p or side % p:
            raise CellError(
                f"resolution {side} is not a positive multiple of the patch size "
                f"{p}; valid resolutions: {p}, {2 * p}, ..., e.g. 224, 1024, 9216"
            )
    if cell.device.startswith("cuda") and cell.dtype == "bfloat16":
        index = int(cell.device.partition(":")[2] or 0)
        if torch.cuda.get_device_capability(index) < (8, 0):
            raise CellError(
                f"{torch.cuda.get_device_name(index)} cannot run bfloat16 "
                "(needs compute capability 8.0); valid dtypes: float32, float16"
            )
    try:
        with torch.device("meta"):
            cell.build()
    except ValueError as err:
        raise CellError(str(err)) from None


def is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "DefaultCPUAllocator" in text
    )


def _limit_address_space(limit_gb: float | None) -> None:
    """A CPU allocation past `memory_limit_gb` beyond what the process already maps fails."""
    if not limit_gb:
        return
    with open("/proc/self/status") as status:
        vm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = vm_kib * 1024 + int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure(cell: Cell) -> dict[str, Any]:
    """Build, warm up and time the cell in this process; returns the measured fields."""
    from . import energy, provenance
    from .memory import MemoryMeter
    from .timing import Timer

    device = torch.device("cuda:0" if cell.device == "cuda" else cell.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = cell.tf32
    torch.backends.cudnn.allow_tf32 = cell.tf32
    row: dict[str, Any] = provenance.device(device)
    meter = energy.meter_for(device, interval_s=cell.sample_interval_s)
    row["energy_source"] = meter.source
    row["idle_power_w"] = meter.idle_power_w(cell.idle_s) if cell.idle_s > 0 else None

    memory = MemoryMeter(device)
    memory.begin()
    _limit_address_space(cell.memory_limit_gb if device.type == "cpu" else None)
    step = _make_step(cell, device)
    timer = Timer(step, device, cell.timing)
    warmup_s = timer.warm_up()
    if cell.compile:
        row["compile_s"] = warmup_s
    readings: list[energy.EnergyReading] = []
    timing = timer.measure(on_begin=meter.begin, on_end=lambda: readings.append(meter.end()))
    row["peak_mem_bytes"], row["mem_source"] = memory.end(), memory.source
    return row | {"timing": timing, "energy": readings[0]}


def _make_step(cell: Cell, device: torch.device):
    dtype = DTYPES[cell.dtype]
    torch.manual_seed(0)
    model = cell.build().to(device)
    images = torch.randn(cell.batch_size, 3, *cell.hw, device=device)
    if cell.mode == "infer":
        model = model.eval().to(dtype)
        images = images.to(dtype)
        forward = torch.compile(model) if cell.compile else model

        def infer() -> None:
            with torch.inference_mode():
                forward(images)

        return infer
    model.train()
    labels = torch.randint(0, 1000, (cell.batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    forward = torch.compile(model) if cell.compile else model
    autocast = dtype != torch.float32

    def train() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return train


def _measure_to_file(cell_path: str, outcome_path: str) -> None:
    """Child side of run_isolated: read the cell, write ('ok', fields) or (status, message)."""
    with open(cell_path, "rb") as handle:
        cell = pickle.load(handle)
    try:
        outcome = ("ok", measure(cell))
    except BaseException as err:  # noqa: BLE001  (every failure becomes data)
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        outcome = ("oom" if is_oom(err) else "error", last[:2000])
    with open(outcome_path, "wb") as handle:
        pickle.dump(outcome, handle)


def run_isolated(cell: Cell) -> tuple[str, Any]:
    """Measure in a fresh Python process: ('ok', fields) or (status, message)."""
    with tempfile.TemporaryDirectory(prefix="attnbench-cell-") as tmp:
        cell_path, outcome_path = Path(tmp, "cell.pkl"), Path(tmp, "outcome.pkl")
        cell_path.write_bytes(pickle.dumps(cell))
        command = [sys.executable, "-m", "harness.cell", str(cell_path), str(outcome_path)]
        try:
            code = subprocess.run(command, timeout=cell.timeout_s).returncode
        except subprocess.TimeoutExpired:
            return "error", f"timed out after {cell.timeout_s:.0f} s (timeout_s)"
        if outcome_path.exists():
            return pickle.loads(outcome_path.read_bytes())
    if code == -signal.SIGKILL:
        return "oom", "measuring process was killed by SIGKILL (likely the kernel OOM killer)"
    why = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    return "error", f"measuring process died with {why}"


def static_row(cell: Cell) -> dict[str, Any]:
    """What is known without measuring: identity, params and FLOPs (on meta), provenance."""
    from .flops import macs_per_image
    from .provenance import host

    with torch.device("meta"):
        params = sum(p.numel() for p in cell.build().parameters())
    macs = macs_per_image(cell.build, *cell.hw)
    return cell.identity() | {"params": params, "macs": macs, "flops": 2 * macs} | host()


def run(cell: Cell) -> dict[str, Any]:
    """The cell's complete row. Never raises for measurement failures: they are its status."""
    start = time.perf_counter()
    row = static_row(cell)
    status, payload = run_isolated(cell)
    row["status"], row["error"] = status, "" if status == "ok" else payload
    if status == "ok":
        row.update(summarise(cell, payload))
    row["harness_s"] = time.perf_counter() - start
    return row


def summarise(cell: Cell, fields: dict[str, Any]) -> dict[str, Any]:
    """Timing and energy objects -> the row's numbers (per batch latency, per image energy)."""
    timing, reading = fields.pop("timing"), fields.pop("energy")
    images = timing.iters * cell.batch_size
    timed_s = sum(timing.per_iter_s)
    out = fields | {
        "latency_ms": timing.median_s * 1e3,
        "latency_ms_p10": timing.quantile(0.10) * 1e3,
        "latency_ms_p90": timing.quantile(0.90) * 1e3,
        "iters": timing.iters,
        "window_s": timing.window_s,
        "throughput_img_s": images / timed_s,
        "energy_valid": reading.valid,
        "energy_note": reading.note,
    }
    if reading.energy_j is not None:
        out["energy_j_per_img"] = reading.energy_j / images
        out["avg_power_w"] = reading.energy_j / reading.window_s
    if reading.sampled_energy_j is not None:
        out["sampled_energy_j_per_img"] = reading.sampled_energy_j / images
    if reading.dram_energy_j is not None:
        out["dram_energy_j_per_img"] = reading.dram_energy_j / images
    return out


if __name__ == "__main__":
    _measure_to_file(*sys.argv[1:3])
