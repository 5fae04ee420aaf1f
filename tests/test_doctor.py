"""attnbench-doctor: on this CPU machine it runs, says what it cannot see and judges the CPU; a
GPU is judged through the NVML double."""

import re
import subprocess
import sys
import time

import pytest
from fake_nvml import FakeNvml

from harness.measuring.meters.contention import usable_cpus
from harness.reporting import doctor


def test_on_a_cpu_machine_it_runs_and_says_what_it_cannot_see(capsys):
    code = doctor.main(["--sample-s", "0.2"])
    out = capsys.readouterr().out
    assert "not seen: GPU:" in out and re.search(r"^cpu\s+usable CPUs\s+\d", out, re.M)
    verdict = out.strip().splitlines()[-1]  # the exit code is what the verdict line says
    assert verdict.startswith(
        {0: "attnbench-doctor: OK", 1: "attnbench-doctor: UNTRUSTWORTHY"}[code]
    )
    failing = [line for line in out.splitlines() if re.match(r"^\w+\s.*\bfail\b", line)]
    assert bool(failing) == (code == 1)


def test_busy_cpus_fail_the_cpu_check():
    # one burner per CPU this process may use: on a 64-CPU runner four would be 6% busy
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(usable_cpus())
    ]
    try:
        findings = {f.check: f for f in doctor.cpu_findings(sample_s=0.5)}
    finally:
        for burner in burners:
            burner.kill()
    busy = findings["busy with other work"]
    assert busy.status == "fail" and "CPU timings would be slowed" in busy.why


def test_gpu_findings_through_nvml():
    nvml = FakeNvml(period_s=0.1, others=[4242])
    nvml.script(clocks_event_reasons=[0x40])
    found, unseen = doctor.gpu_findings(nvml, probe_self=False)
    checks = {f.check: f for f in found}
    assert unseen == []
    assert checks["energy counter step"].value.startswith("100 ms")
    assert "for 1%: 0.4 s with step-aligned reads" in checks["energy counter step"].value
    assert checks["other processes"].status == "fail"
    assert checks["throttle reasons now"].status == "fail"
    assert checks["instant power field"].value == "yes"
    code, verdict = doctor._status_line(found)
    assert code == 1 and "UNTRUSTWORTHY" in verdict


def test_an_old_driver_leaves_findings_unknown_not_a_crash():
    found, _ = doctor.gpu_findings(FakeNvml(old_driver=True), probe_self=False)
    checks = {f.check: f for f in found}
    assert checks["other processes"].status == "unknown"
    assert checks["instant power field"].value == "no"


def test_the_doctor_judges_the_gpus_this_process_may_use(monkeypatch):
    """A shared node: another user's job on the second GPU is not this sweep's problem."""
    monkeypatch.setattr(doctor, "STEP_PROBE_S", 0.3)  # the counter steps every 0.1 s here
    nvml = FakeNvml(uuids=("GPU-aaaa", "GPU-bbbb"), others={"GPU-bbbb": [4242]})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    found, _ = doctor.gpu_findings(nvml, probe_self=False)
    assert {f.area for f in found} - {"gpu"} == {"cuda:0"}
    assert {f.check: f for f in found}["other processes"].status == "ok"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")  # by UUID: the second, as cuda:0
    found, _ = doctor.gpu_findings(nvml, probe_self=False)
    names = {f.value for f in found if f.check == "name / UUID"}
    assert any("GPU-bbbb" in n for n in names) and not any("GPU-aaaa" in n for n in names)
    assert {f.check: f for f in found}["other processes"].status == "fail"


def test_an_old_driver_still_shows_its_throttle_reasons(monkeypatch):
    monkeypatch.setattr(doctor, "STEP_PROBE_S", 0.3)
    nvml = FakeNvml(old_driver=True)
    nvml.script(clocks_event_reasons=[0x40])
    found, _ = doctor.gpu_findings(nvml, probe_self=False)
    assert {f.check: f for f in found}["throttle reasons now"].status == "fail"


def test_a_probe_that_never_starts_is_reported_not_waited_for():
    nvml = FakeNvml()
    start = time.monotonic()
    finding = doctor.sees_itself(
        nvml, "GPU-fake", 0, code="import time; time.sleep(60)", timeout_s=0.5
    )
    assert finding.status == "unknown" and "no CUDA context within" in finding.value
    assert time.monotonic() - start < 30


def pulsed(nvml):
    """The pulse test's load, on the double: the board is busy for as long as asked."""

    def load(seconds):
        nvml.set_busy(True)
        time.sleep(seconds)
        nvml.set_busy(False)

    return lambda index: load


def test_the_power_test_finds_a_sensor_that_sees_a_quarter_of_each_step():
    """A sensor sampling the last 25% of each counter step (A100/H100) is found at about 25%
    by a pulsed load, and warned of; a plain doctor run does not load the GPU."""
    nvml = FakeNvml(period_s=0.05, sensor_duty=0.25)
    found, _ = doctor.gpu_findings(nvml, probe_self=False, power_test=pulsed(nvml))
    line = next(f for f in found if f.check == "power sensor coverage")
    assert line.status == "warn" and "counted by where it falls" in line.why
    share = int(line.value.split("%")[0]) / 100
    assert 0.15 <= share <= 0.4, line.value
    plain, _ = doctor.gpu_findings(FakeNvml(period_s=0.05), probe_self=False)
    assert "power sensor coverage" not in {f.check for f in plain}


def test_the_power_test_finds_a_sensor_that_sees_all_of_each_step():
    nvml = FakeNvml(period_s=0.05, idle_w=60, load_w=300)
    found = doctor.sensor_coverage(nvml, "GPU-fake", pulsed(nvml)(0), 0.05)
    assert found.share is not None and found.share >= 0.9, found
    assert (found.idle_w, found.load_w) == (
        pytest.approx(60, rel=0.05),
        pytest.approx(300, rel=0.05),
    )
    assert doctor.coverage_finding("cuda:0", found, 0.05).status == "ok"
