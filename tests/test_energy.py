"""Energy against an NVML double that behaves like the real one: a counter that steps every
100 ms, a power reading that is a 1-second average, host PIDs in containers, old drivers."""

import os

import pytest
from fake_nvml import FakeNvml

from harness.measuring import nvml as nv
from harness.measuring.meters import base, rapl
from harness.measuring.meters import nvml_energy as energy

UUID = "GPU-fake"


def gpu(nvml, context=True):
    """The measuring process's view: the process list before its context, then its context."""
    processes = energy.GpuProcesses(nvml, UUID)
    if context:
        nvml.open_context()
        processes.context_made()
    return energy.gpu_meter(nvml, UUID, UUID, processes, interval_s=0.05), processes


def busy_window(nvml, meter, seconds=1.0):
    """Idle until the window starts, full load during it (the cell's real pattern)."""
    meter.begin()
    nvml.set_busy(True)
    energy.time.sleep(seconds)
    nvml.set_busy(False)
    return meter.end()


def test_step_aligned_counter_reads_hit_the_true_energy_within_one_percent():
    nvml = FakeNvml(period_s=0.25, idle_w=60, load_w=300)  # coarse steps: plain reads +-25%
    meter, _ = gpu(nvml)
    reading = busy_window(nvml, meter)
    true = 300 * reading.window_s
    assert reading.source == "nvml:total_energy_counter"
    assert abs(reading.energy_j - true) / true < 0.02
    assert reading.valid and reading.resolution < 0.01


def test_idle_power_and_the_counter_step_are_measured_not_assumed():
    nvml = FakeNvml(period_s=0.1, idle_w=60)
    meter, _ = gpu(nvml)
    assert meter.idle_power_w(1.0) == pytest.approx(60, rel=0.05)
    assert meter.period_s == pytest.approx(0.1, abs=0.01)
    assert "counter step 100 ms" in busy_window(nvml, meter, 0.3).note


def test_the_cross_check_samples_instant_power_not_the_one_second_average():
    nvml = FakeNvml(period_s=0.1, idle_w=60, load_w=300)
    meter, _ = gpu(nvml)
    reading = busy_window(nvml, meter)
    assert "power samples: nvml:power_instant_field" in reading.note
    assert reading.sampled_energy_j == pytest.approx(300 * reading.window_s, rel=0.05)
    averaged = FakeNvml(period_s=0.1, idle_w=60, load_w=300, instant_field=False)
    meter, _ = gpu(averaged)
    meter.idle_power_w(1.0)  # the idle wait before every cell
    late = busy_window(averaged, meter)
    assert "power samples: nvml:power_usage (1 s average)" in late.note
    assert late.sampled_energy_j < 0.8 * 300 * late.window_s  # the average lags the load
    true = 300 * late.window_s  # without instant power the bound is wider, and honest
    assert abs(late.energy_j - true) <= late.resolution * late.energy_j + 0.005 * true


def test_a_container_shows_host_pids_and_the_cell_still_recognises_itself():
    nvml = FakeNvml(host_pid_offset=1_000_000)  # our context appears as pid + 1e6
    meter, processes = gpu(nvml)
    assert processes.ours == {os.getpid() + 1_000_000}
    assert isinstance(meter, energy.NvmlMeter)
    assert busy_window(nvml, meter, 0.3).energy_j > 0


def test_a_real_second_process_is_still_refused():
    nvml = FakeNvml(others=[4242])
    meter, _ = gpu(nvml)
    assert meter.source == (
        "unavailable: another process (NVML pid 4242) was on this GPU before the cell began, "
        "so its energy would be counted too"
    )


def test_a_process_appearing_during_the_window_invalidates_its_energy():
    nvml = FakeNvml()
    meter, _ = gpu(nvml)
    meter.begin()
    nvml.others.append(5151)
    energy.time.sleep(0.3)
    reading = meter.end()
    assert not reading.valid and "process [5151] appeared on this GPU meanwhile" in reading.note


def test_an_old_driver_degrades_the_process_check_not_the_cell():
    nvml = FakeNvml(old_driver=True)
    meter, processes = gpu(nvml)
    assert processes.unreadable().startswith("unavailable: NVMLLibraryMismatchError")
    reading = busy_window(nvml, meter, 0.3)
    assert reading.energy_j > 0 and "sharing not checked" in reading.note
    assert "power samples: nvml:power_usage (1 s average)" in reading.note  # no field values


def test_mig_slices_are_named_and_refused_as_such(monkeypatch):
    nvml = FakeNvml(uuids=["GPU-aaaa"])
    meter = energy.gpu_meter(
        nvml, "MIG-1234", "MIG-1234", energy.GpuProcesses(nvml, "GPU-aaaa"), 0.05
    )
    assert meter.source.startswith("unavailable: MIG-1234 is a MIG instance")
    env = {"CUDA_VISIBLE_DEVICES": "MIG-1234"}
    assert nv.visible_gpus(nvml, env) == [(0, "MIG-1234")]
    assert nv.bare("MIG-1234") == nv.bare("GPU-1234") == "1234"


def test_a_counter_that_does_not_step_gives_a_bound_and_fails_it(monkeypatch):
    monkeypatch.setattr(energy, "STEP_TIMEOUT_S", 0.2)
    nvml = FakeNvml(counters_mj=[1_000, 1_000, 1_000, 51_000])  # no steps, then a jump
    meter, _ = gpu(nvml)
    meter.begin()
    energy.time.sleep(0.3)
    reading = meter.end()
    assert "counter not step-aligned (step period not measured: 100 ms assumed)" in reading.note
    assert not reading.valid and reading.resolution > 0.01


def test_counter_wrap_around():
    top = energy.NVML_COUNTER_WRAP
    assert base.counter_delta(top - 500, 1_500, top) == 2_000


def test_no_gpu_nvml_is_unavailable():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise OSError("libnvidia-ml.so.1 not found")

    with pytest.raises(nv.Unavailable, match="NVML could not start"):
        nv.load(Broken())
    with pytest.raises(nv.Unavailable, match="no device with UUID GPU-other"):
        nv.handle(FakeNvml(), "GPU-other")


def _zone(root, name, label, value, top):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{value}\n")
    (zone / "max_energy_range_uj").write_text(f"{top}\n")
    return zone


def test_rapl_packages_with_wrap_and_dram_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(rapl, "MIN_WINDOW_S", 0.0)
    pkg = _zone(tmp_path, "intel-rapl:0", "package-0", 999_000_000, 999_999_999)
    dram = _zone(tmp_path, "intel-rapl:0:0", "dram", 10, 999_999_999)
    _zone(tmp_path, "intel-rapl:0:1", "core", 0, 999_999_999)  # sub-zone: not a package
    meter = rapl.cpu_meter(rapl_root=tmp_path)
    assert meter.source == "rapl:package"
    meter.begin()
    (pkg / "energy_uj").write_text("4000000\n")  # wrapped past the top
    (dram / "energy_uj").write_text("2000010\n")
    reading = meter.end()
    assert reading.energy_j == pytest.approx((999_999_999 + 1 - 999_000_000 + 4_000_000) / 1e6)
    assert reading.dram_energy_j == pytest.approx(2.0) and reading.valid


def test_cpu_without_rapl_is_unavailable(tmp_path):
    meter = rapl.cpu_meter(rapl_root=tmp_path)
    assert meter.source.startswith("unavailable: no readable RAPL")
    assert meter.end().energy_j is None


def test_the_sampler_integrates_over_exactly_the_window():
    sampler = energy.PowerSampler(FakeNvml(simple=True), UUID, 0.05)
    sampler.samples = [(0.0, 100.0), (1.0, 100.0), (2.0, 300.0)]
    assert sampler.joules(0.5, 1.5) == pytest.approx(50 + 0.5 * (100 + 200) / 2)  # linear
    assert sampler.joules(1.0, 1.0) is None


def test_without_a_counter_the_instant_power_samples_are_the_energy():
    nvml = FakeNvml(counter_supported=False, idle_w=250, load_w=250)
    meter, _ = gpu(nvml)
    assert meter.source == "nvml:power_instant_field"
    reading = busy_window(nvml, meter)
    assert reading.energy_j == pytest.approx(250 * reading.window_s, rel=0.05)
    assert reading.sampled_energy_j is None  # it is the number, not a cross-check


def test_the_gpu_processes_counted_are_the_others_not_the_cell():
    import torch

    from harness.measuring.gpu import GpuSide

    nvml = FakeNvml(others=[4242])
    side = GpuSide(torch.device("cuda"), UUID, nvml, "")
    nvml.open_context()  # the cell's own context appears
    side.processes.context_made()
    assert len(nvml.nvmlDeviceGetComputeRunningProcesses(UUID)) == 2
    assert side.others() == 1
    assert GpuSide(torch.device("cuda"), UUID, FakeNvml(old_driver=True), "").others() is None
