"""attnbench-check: verdicts and exit codes on synthetic runs."""

import json

import pandas as pd
import pytest
from fixtures import row

from harness import check


def run(**change) -> pd.DataFrame:
    """A small run: three mechanisms at two resolutions, with a 2% recorded spread."""
    rows = []
    for res in (64, 128):
        for name, thr in (("softmax", 400.0), ("sdpa", 450.0), ("linear_infsa", 500.0)):
            thr = thr * 64 / res
            values = row(name, res, throughput=thr, model="small", device="cpu", energy=0.5)
            for key, factor in change.get(name, {}).items():
                values[key] = values[key] * factor if isinstance(factor, float) else factor
            rows.append(values)
    frame = pd.DataFrame(rows)
    # a uniformly slower machine: every time-derived number scales together
    slow = change.get("machine", 1.0)
    for column in ("latency_ms", "latency_ms_p10", "latency_ms_p90", "energy_j_per_img"):
        frame[column] *= slow
    frame["throughput_img_s"] /= slow
    return frame


def write(tmp_path, name, frame):
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return str(path)


def verdict(tmp_path, capsys, current, *flags, baseline=None):
    base = write(tmp_path, "base", run() if baseline is None else baseline)
    code = check.main(["--baseline", base, "--current", write(tmp_path, "cur", current), *flags])
    return code, capsys.readouterr()


def test_identical_runs_pass(tmp_path, capsys):
    code, out = verdict(tmp_path, capsys, run())
    assert code == 0
    assert "OK: 6 cells compared, nothing regressed" in out.out


def test_one_mechanism_30_percent_slower_fails_and_is_named(tmp_path, capsys):
    slower = {
        "throughput_img_s": 1 / 1.3,
        "latency_ms": 1.3,
        "latency_ms_p10": 1.3,
        "latency_ms_p90": 1.3,
    }
    code, out = verdict(tmp_path, capsys, run(sdpa=slower))
    assert code == 1
    verdict_line = out.out.strip().splitlines()[-1]
    assert "REGRESSION in 2 of 6 cells" in verdict_line
    assert "sdpa small 64px" in verdict_line and "throughput_img_s 0.769x" in verdict_line
    assert "linear_infsa" not in verdict_line and "softmax small" not in verdict_line


def test_ok_to_oom_is_a_regression(tmp_path, capsys):
    code, out = verdict(tmp_path, capsys, run(linear_infsa={"status": "oom"}))
    assert code == 1
    assert "linear_infsa small 64px b1 infer bfloat16 cpu status ok -> oom" in out.out


def test_changed_flops_is_a_regression(tmp_path, capsys):
    code, out = verdict(tmp_path, capsys, run(softmax={"flops": 1.01}))
    assert code == 1
    assert "softmax small 128px b1 infer bfloat16 cpu flops" in out.out.splitlines()[-1]


def test_noise_within_the_recorded_spread_passes(tmp_path, capsys):
    # 12% slower is past the 10% tolerance, but each row recorded a +-5% p10..p90 spread
    noisy = {
        "throughput_img_s": 1 / 1.12,
        "latency_ms": 1.12,
        "latency_ms_p10": 1.12,
        "latency_ms_p90": 1.12,
        "energy_j_per_img": 1.12,
    }
    code, _ = verdict(tmp_path, capsys, run(sdpa=noisy))
    assert code == 0
    code, _ = verdict(tmp_path, capsys, run(sdpa=noisy), "--spread-factor", "0")
    assert code == 1


def test_uniformly_slower_machine_passes_when_normalised(tmp_path, capsys):
    code, _ = verdict(tmp_path, capsys, run(machine=1.2), "--spread-factor", "0")
    assert code == 1  # without normalising, the slower machine looks like a regression
    code, out = verdict(
        tmp_path, capsys, run(machine=1.2), "--normalise", "softmax", "--spread-factor", "0"
    )
    assert code == 0 and "normalised to softmax" in out.out
    slower = {
        "throughput_img_s": 1 / 1.3,
        "latency_ms": 1.3,
        "latency_ms_p10": 1.3,
        "latency_ms_p90": 1.3,
    }
    code, out = verdict(tmp_path, capsys, run(machine=1.2, sdpa=slower), "--normalise", "softmax")
    assert code == 1 and "sdpa" in out.out.splitlines()[-1]


def test_new_and_missing_cells_are_listed(tmp_path, capsys):
    current = run()
    current = pd.concat(
        [
            current[current["attention"] != "sdpa"],
            pd.DataFrame([row("swin", 64, model="small", device="cpu")]),
        ]
    )
    code, out = verdict(tmp_path, capsys, current)
    assert code == 0
    assert "new (not in baseline): swin small 64px" in out.out
    assert out.out.count("missing (not in current): sdpa") == 2


@pytest.mark.parametrize("content", ["", "not,a\n\x00\x01", "attention,status\n"])
def test_empty_or_corrupt_baseline_is_unusable(tmp_path, capsys, content):
    (tmp_path / "bad.csv").write_text(content)
    code = check.main(
        ["--baseline", str(tmp_path / "bad.csv"), "--current", write(tmp_path, "cur", run())]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("attnbench-check: unusable input: baseline") and "Traceback" not in err


def test_missing_baseline_and_no_common_cells_are_unusable(tmp_path, capsys):
    code = check.main(
        ["--baseline", str(tmp_path / "nope.csv"), "--current", write(tmp_path, "cur", run())]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    other = run().assign(model="paper_4l")
    code, out = verdict(tmp_path, capsys, other)
    assert code == 2 and "no cell in common" in out.err


def test_schema_mismatch_is_unusable(tmp_path, capsys):
    code, out = verdict(tmp_path, capsys, run().assign(schema_version=99))
    assert code == 2 and "schema_version 99" in out.err


def test_tolerances_from_flags_and_config(tmp_path, capsys):
    slower = {
        "throughput_img_s": 1 / 1.3,
        "latency_ms": 1.3,
        "latency_ms_p10": 1.3,
        "latency_ms_p90": 1.3,
        "energy_j_per_img": 1.3,
    }
    code, _ = verdict(
        tmp_path,
        capsys,
        run(sdpa=slower),
        "--tolerance",
        "throughput_img_s=0.5",
        "--tolerance",
        "latency_ms=0.5",
        "--tolerance",
        "energy_j_per_img=0.5",
    )
    assert code == 0
    config = tmp_path / "check.yaml"
    config.write_text(
        "tolerance: {throughput_img_s: 0.5, latency_ms: 0.5, energy_j_per_img: 0.5}\n"
    )
    code, _ = verdict(tmp_path, capsys, run(sdpa=slower), "--config", str(config))
    assert code == 0
    code, out = verdict(tmp_path, capsys, run(), "--tolerance", "speed=0.1")
    assert code == 2 and "valid: throughput_img_s" in out.err


def test_github_action_benchmark_json(tmp_path, capsys):
    bigger, smaller = tmp_path / "bigger.json", tmp_path / "smaller.json"
    code, _ = verdict(
        tmp_path, capsys, run(), "--github-bigger", str(bigger), "--github-smaller", str(smaller)
    )
    assert code == 0
    up, down = json.loads(bigger.read_text()), json.loads(smaller.read_text())
    assert len(up) == 6 and all(e["unit"] == "img/s" and e["value"] > 0 for e in up)
    assert {e["unit"] for e in down} == {"ms", "J/img", "bytes"}
    assert all(set(e) >= {"name", "unit", "value"} for e in up + down)


def test_current_as_a_run_dir_with_energy_unmeasured(tmp_path, capsys):
    from harness.rows import write_row

    for i, values in enumerate(run().to_dict("records")):
        write_row(tmp_path / "sweep" / str(i), values | {"energy_j_per_img": None})
    base = write(tmp_path, "base", run().assign(energy_j_per_img=None))
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "sweep").rglob("*"))
    code = check.main(
        ["--baseline", base, "--current", str(tmp_path / "sweep"), "--normalise", "softmax"]
    )
    assert code == 0, capsys.readouterr()
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "sweep").rglob("*"))
    assert after == before  # the check reads its input and writes nothing into it
