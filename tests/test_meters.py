"""Meters plug in: one table, each meter declaring the columns it fills; two energy sources side
by side; the measuring process refuses a value for a column its meter did not declare."""

import time

import pytest
import torch
from fake_nvml import FakeNvml
from fixtures import FAST, config
from test_energy import UUID, _zone, gpu

from harness.data import rows
from harness.measuring import measure, meters
from harness.measuring.meters import base, contention, energy, memory, nvml_energy, rapl
from harness.measuring.meters.energy import Energy


def test_every_meter_declares_documented_columns_and_no_column_has_two_meters():
    for device in ("cpu", "cuda"):
        claimed = [c for plug in meters.for_device(device) for c in plug.columns]
        assert set(claimed) <= set(rows.COLUMNS), set(claimed) - set(rows.COLUMNS)
        assert len(claimed) == len(set(claimed)), f"a {device} column filled by two meters"
    assert {p.name for p in meters.for_device("cuda")} - {p.name for p in meters.for_device("cpu")}
    assert all(p.span in ("window", "run", "step") for p in meters.METERS)


def test_a_meter_with_an_unknown_span_is_refused():
    with pytest.raises(ValueError, match="span is one of window, run, step, not 'forever'"):
        base.Plug("x", (), ("cpu",), "forever", lambda bench: None)


def test_two_energy_sources_run_side_by_side_over_one_window(tmp_path, monkeypatch):
    """The GPU's NVML counter and the host's RAPL package, each from its own counter, in one
    window: both column sets filled, neither derived from the other."""
    monkeypatch.setattr(rapl, "MIN_WINDOW_S", 0.0)
    package = _zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, 999_999_999)
    nvml = FakeNvml()
    source, _ = gpu(nvml)
    device = Energy(source, "", idle_s=0.0)
    host = Energy(rapl.cpu_meter(rapl_root=tmp_path), "host_")
    device.begin()
    host.begin()
    nvml.set_busy(True)
    package.joinpath("energy_uj").write_text("31000000\n")  # 30 J on the host's package
    time.sleep(1.0)
    nvml.set_busy(False)
    host.end()
    device.end()
    window = base.Window(images=10, seconds=1.0)
    gpu_fields, host_fields = device.fields(window), host.fields(window)
    assert not set(gpu_fields) & set(host_fields)
    assert host_fields["host_energy_source"] == "rapl:package"
    assert host_fields["host_energy_j_per_img"] == pytest.approx(3.0)
    assert gpu_fields["energy_source"] == "nvml:total_energy_counter"
    assert gpu_fields["energy_j_per_img"] > 0
    assert gpu_fields["energy_j_per_img"] != pytest.approx(3.0)  # the GPU's own count


class Extra:
    """A meter that fills what it declared, or (sneaky) one column more."""

    def __init__(self, sneaky):
        self.sneaky, self.begun, self.ended = sneaky, 0, 0

    def begin(self):
        self.begun += 1

    def end(self):
        self.ended += 1

    def fields(self, window):
        out = {"host_energy_note": f"{self.begun}/{self.ended} over {window.images} images"}
        return out | ({"host_energy_source": "made up"} if self.sneaky else {})


@pytest.mark.parametrize("sneaky", [False, True])
def test_the_measuring_process_runs_the_table_and_holds_meters_to_their_columns(
    monkeypatch, sneaky
):
    plug = base.Plug("extra", ("host_energy_note",), ("cpu",), "window", lambda b: Extra(sneaky))
    monkeypatch.setattr(meters, "METERS", (*meters.METERS, plug))
    cfg = config("resolution=32", "model.depth=1", *FAST)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # not this test process's
    if sneaky:
        with pytest.raises(RuntimeError, match=r"meter extra filled undeclared .*host_energy_so"):
            measure.measure(cfg, None, lambda _: None)
        return
    row = measure.measure(cfg, None, lambda _: None)
    assert row["host_energy_note"] == f"1/1 over {row['iters']} images"
    assert row["peak_mem_bytes"] is not None and row["timing_note"]  # the table's own meters


class FakeGpu:
    """The GPU side a meter sees (harness.measuring.gpu.GpuSide), on the NVML double."""

    def __init__(self, nvml):
        self.nvml, self.handle, self.uuid = nvml, UUID, UUID
        self.processes = nvml_energy.GpuProcesses(nvml, UUID)
        nvml.open_context()
        self.processes.context_made()

    def energy_meter(self, interval_s):
        return nvml_energy.gpu_meter(self.nvml, UUID, UUID, self.processes, interval_s)


def window_on_a_gpu(monkeypatch, order=None):
    """One cell's window meters on the double's GPU: loaded during the window, idle after it,
    ended in the table's order (or the one given)."""
    if order is not None:
        monkeypatch.setattr(meters, "METERS", order)
    nvml = FakeNvml()
    cfg = config("resolution=32", "model.depth=1", "energy.idle_s=0", "energy.settle_s=0")
    cell_meters = meters.Cell(base.Bench(cfg, torch.device("cuda"), FakeGpu(nvml)))
    cell_meters.begin("window")
    nvml.set_busy(True)
    time.sleep(0.4)
    stepped = nvml.nvmlDeviceGetTotalEnergyConsumption(UUID)
    while nvml.nvmlDeviceGetTotalEnergyConsumption(UUID) == stepped:  # just after a step: the
        time.sleep(0.001)  # energy meter's end waits a whole period for the next one
    nvml.set_busy(False)  # the last step has synchronised: the GPU goes idle from here
    cell_meters.end("window")
    return cell_meters.fields(base.Window(images=10, seconds=0.4))


def test_on_a_gpu_the_clocks_are_read_before_the_energy_meter_waits_for_its_counter(monkeypatch):
    row = window_on_a_gpu(monkeypatch)
    assert row["timing_valid"], row["timing_note"]
    assert row["energy_source"] == "nvml:total_energy_counter" and row["energy_j_per_img"] > 0
    # ended the other way round, the check reads a GPU changing P-state after the load
    energy_last = (memory.GPU, contention.PLUG, energy.DEVICE, energy.HOST)
    late = window_on_a_gpu(monkeypatch, energy_last)
    assert (
        not late["timing_valid"] and "hardware slowdown at the window's end" in late["timing_note"]
    )


def test_energy_above_idle_is_the_total_less_the_idle_power_over_the_window():
    nvml = FakeNvml(period_s=0.1, idle_w=60, load_w=300)
    source, _ = gpu(nvml)
    meter = Energy(source, "", idle_s=0.5)  # the idle wait, measured by the counter
    meter.begin()
    nvml.set_busy(True)
    time.sleep(1.0)
    nvml.set_busy(False)
    meter.end()
    row = meter.fields(base.Window(images=100, seconds=1.0))
    assert row["idle_power_w"] == pytest.approx(60, rel=0.05)
    assert row["energy_j_per_img"] == pytest.approx(3.0, rel=0.05)  # 300 W for 1 s, 100 images
    assert row["energy_above_idle_j_per_img"] == pytest.approx(2.4, rel=0.05)  # 240 W above
    without = Energy(gpu(FakeNvml())[0], "", idle_s=0.0)  # no idle wait: nothing to subtract
    without.begin()
    without.end()
    assert without.fields(base.Window(10, 0.1))["energy_above_idle_j_per_img"] is None


@pytest.mark.parametrize("options,kernel", [((), None), (("attention.backend=math",), "math")])
def test_a_row_says_which_kernel_ran_sdpa(monkeypatch, options, kernel):
    from attention_zoo.sdpa import BACKENDS

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # not this test process's
    cfg = config("attention=sdpa", *options, "resolution=32", "model.depth=1", *FAST)
    row = measure.measure(cfg, None, lambda _: None)
    assert row["attention_kernel"] == kernel or (
        kernel is None and row["attention_kernel"] in BACKENDS
    )


def test_a_gpu_cell_records_reserved_memory_and_the_allocator_settings(monkeypatch):
    """The CUDA allocator's calls, standing in for a GPU: reserved beside allocated, and the
    PYTORCH_CUDA_ALLOC_CONF the process ran with (expandable segments added, others kept)."""
    from harness.measuring.meters import memory as mem

    for name, value in {
        "synchronize": lambda device=None: None,
        "empty_cache": lambda: None,
        "reset_peak_memory_stats": lambda device=None: None,
        "max_memory_allocated": lambda device=None: 3 * 2**30,
        "max_memory_reserved": lambda device=None: 5 * 2**30,
    }.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setenv(mem.ALLOC_CONF, "max_split_size_mb:512,expandable_segments:False")
    mem.use_expandable_segments()
    meter = mem.MemoryMeter(torch.device("cuda"))
    meter.begin()
    meter.end()
    row = meter.fields(base.Window(1, 1.0))
    assert row["peak_mem_bytes"] == 3 * 2**30 and row["reserved_mem_bytes"] == 5 * 2**30
    assert row["allocator_conf"] == "max_split_size_mb:512,expandable_segments:True"
    assert row["mem_source"] == "cuda:max_memory_allocated"


def test_a_gpu_cell_waits_for_its_temperature_to_settle_and_knows_how_long_the_gpu_rested(
    tmp_path, monkeypatch
):
    from harness.measuring.meters import gpu_state

    monkeypatch.setattr(gpu_state, "SETTLE_POLL_S", 0.01)
    nvml = FakeNvml()
    nvml.script(temperature_c=[72, 68, 65, 63, 63, 62, 62])  # cooling after the last cell
    stamp = tmp_path / "GPU-fake.last-window"
    first = gpu_state.GpuState(nvml, UUID, stamp, settle_s=5.0)
    assert first.settled is True and first.idle_before_s is None  # none on record yet
    assert nvml.nvmlDeviceGetTemperature(UUID, 0) == 62  # it read until the readings held
    first.begin()
    first.end()  # writes the stamp
    time.sleep(0.2)
    second = gpu_state.GpuState(nvml, UUID, stamp, settle_s=5.0)
    assert 0.2 <= second.idle_before_s < 5
    second.begin()
    row = second.fields(base.Window(1, 1.0))
    assert row["window_start_temperature_c"] == 62 and row["settled"] is True
    heating = FakeNvml()
    heating.script(temperature_c=list(range(40, 90)))  # never settles: bounded, and said
    late = gpu_state.GpuState(heating, UUID, None, settle_s=0.1)
    assert late.settled is False and 0.1 <= late.settle_s < 1
