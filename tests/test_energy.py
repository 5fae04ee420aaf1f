"""Energy meters against a fake NVML and a fake RAPL tree."""

from types import SimpleNamespace

import pytest
from fake_nvml import FakeNvml

from harness import energy

GPU = SimpleNamespace(type="cuda")


@pytest.fixture(autouse=True)
def _uuid(monkeypatch):
    monkeypatch.setattr(energy, "gpu_uuid", lambda device: "GPU-fake")
    monkeypatch.setattr(energy, "MIN_WINDOW_S", 0.0)


def window(meter, seconds=0.05):
    meter.begin()
    energy.time.sleep(seconds)
    return meter.end()


def test_counter_delta_is_the_energy():
    # first read at construction (support probe), then begin and end
    nvml = FakeNvml(counters_mj=[1_000, 1_000, 31_000])
    meter = energy.meter_for(GPU, nvml=nvml)
    reading = window(meter)
    assert reading.source == "nvml:total_energy_counter"
    assert reading.energy_j == pytest.approx(30.0)
    assert reading.valid
    assert reading.sampled_energy_j > 0  # power sampling runs beside the counter


def test_counter_wrap_around():
    top = energy.NVML_COUNTER_WRAP
    nvml = FakeNvml(counters_mj=[top - 500, top - 500, 1_500])
    reading = window(energy.meter_for(GPU, nvml=nvml))
    assert reading.energy_j == pytest.approx(2.0)


def test_not_supported_counter_falls_back_to_power_sampling():
    nvml = FakeNvml(counter_supported=False, power_mw=250_000)
    meter = energy.meter_for(GPU, nvml=nvml)
    assert meter.source == "nvml:power_sampling"
    reading = window(meter, 0.2)
    # a constant 250 W integrated over the sampled span
    assert reading.energy_j / reading.window_s == pytest.approx(250.0, rel=0.15)
    assert reading.sampled_energy_j is None  # it is the primary number, not a cross-check


def test_idle_power_from_samples():
    meter = energy.meter_for(GPU, nvml=FakeNvml(counters_mj=[0], power_mw=60_000))
    assert meter.idle_power_w(0.05) == pytest.approx(60.0)


def test_zero_delta_is_no_measurement():
    reading = window(energy.meter_for(GPU, nvml=FakeNvml(counters_mj=[5_000])))
    assert reading.energy_j is None and not reading.valid
    assert "did not advance" in reading.note


def test_short_window_is_flagged(monkeypatch):
    monkeypatch.setattr(energy, "MIN_WINDOW_S", 10.0)
    reading = window(energy.meter_for(GPU, nvml=FakeNvml(counters_mj=[0, 0, 9_000])))
    assert reading.energy_j == pytest.approx(9.0) and not reading.valid
    assert "shorter than" in reading.note


def test_no_device_with_that_uuid_is_unavailable(monkeypatch):
    monkeypatch.setattr(energy, "gpu_uuid", lambda device: "GPU-other")
    meter = energy.meter_for(GPU, nvml=FakeNvml())
    assert meter.source.startswith("unavailable: NVML has no device with UUID GPU-other")
    reading = window(meter)
    assert reading.energy_j is None and meter.idle_power_w(0.01) is None


def test_mig_is_refused():
    meter = energy.meter_for(GPU, nvml=FakeNvml(mig=1))
    assert meter.source.startswith("unavailable: MIG is enabled")


def test_nvml_that_cannot_start_is_unavailable():
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise OSError("libnvidia-ml.so.1 not found")

    assert energy.meter_for(GPU, nvml=Broken()).source.startswith("unavailable: NVML could not")


def _zone(root, name, label, value, top):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{value}\n")
    (zone / "max_energy_range_uj").write_text(f"{top}\n")
    return zone


def test_rapl_packages_with_wrap_and_dram_apart(tmp_path):
    pkg = _zone(tmp_path, "intel-rapl:0", "package-0", 999_000_000, 999_999_999)
    dram = _zone(tmp_path, "intel-rapl:0:0", "dram", 10, 999_999_999)
    _zone(tmp_path, "intel-rapl:0:1", "core", 0, 999_999_999)  # sub-zone: not a package
    meter = energy.meter_for(SimpleNamespace(type="cpu"), rapl_root=tmp_path)
    assert meter.source == "rapl:package"
    meter.begin()
    (pkg / "energy_uj").write_text("4000000\n")  # wrapped: 1_000_000 - 1 + ... past the top
    (dram / "energy_uj").write_text("2000010\n")
    reading = meter.end()
    assert reading.energy_j == pytest.approx((999_999_999 + 1 - 999_000_000 + 4_000_000) / 1e6)
    assert reading.dram_energy_j == pytest.approx(2.0)


def test_cpu_without_rapl_is_unavailable(tmp_path):
    meter = energy.meter_for(SimpleNamespace(type="cpu"), rapl_root=tmp_path)
    assert meter.source.startswith("unavailable: no readable RAPL")
