"""attnbench-check: verdicts from raw samples, failing closed, on doctored rows."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
from fixtures import row

from harness.data.rows import write_row
from harness.reporting import check, stats

CELLS = (("softmax", 400.0), ("sdpa", 450.0), ("linear_infsa", 500.0))


def trial_rows(
    trials=3, noise=0.02, drift=0.01, seed=0, revision="", slow=None, steps=200, **change
):
    """A run: three mechanisms at two resolutions, `trials` trials each, every timed step kept.

    Steps are lognormal around the cell's step time (`noise` within a window, `drift` between
    trials); `slow` = {mechanism: factor} makes a mechanism slower; `change` = {mechanism:
    {column: value}} edits its rows afterwards.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for trial in range(trials):
        for res in (64, 128):
            for name, thr in CELLS:
                ms = 1000 / (thr * 64 / res) * (slow or {}).get(name, 1.0)
                ms *= np.exp(rng.normal(0, drift))
                times = ms * np.exp(rng.normal(0, noise, steps))
                values = row(
                    name,
                    res,
                    model="small",
                    device="cpu",
                    energy=0.5,
                    trial=trial,
                    revision=revision,
                )
                values |= {
                    "step_times_ms": json.dumps(list(np.round(times, 6))),
                    "iters": steps,
                    "latency_ms": float(np.median(times)),
                    "latency_ms_p10": float(np.quantile(times, 0.1)),
                    "latency_ms_p90": float(np.quantile(times, 0.9)),
                    "throughput_img_s": 1000 / float(np.mean(times)),
                    "timing_valid": True,
                    "energy_j_per_img": 0.5 * ms / 2.5,
                }
                values |= change.get(name, {})
                rows.append(values)
    return pd.DataFrame(rows)


def run(tmp_path, capsys, current, *flags, baseline=None):
    paths = []
    for name, frame in (("base", trial_rows() if baseline is None else baseline), ("cur", current)):
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        paths.append(str(path))
    code = check.main(["--baseline", paths[0], "--current", paths[1], *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def verdicts(out: str, metric: str) -> dict[str, str]:
    """cell name -> verdict of one metric, from the printed table."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if metric in parts:
            at = parts.index(metric)
            verdict = [p for p in parts[at:] if p in check_verdicts()]
            if verdict and not line.startswith("attnbench-check"):
                found[" ".join(parts[:at])] = verdict[0]
    return found


def check_verdicts():
    return {"ok", "regressed", "improved", "inconclusive", "changed"}


def test_an_identical_rerun_is_ok(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, trial_rows(seed=1))
    assert code == check.EXIT_OK, out
    assert "OK: 6 cells compared, nothing regressed" in out


def test_one_mechanism_30_percent_slower_regresses_and_is_named(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, trial_rows(seed=1, slow={"sdpa": 1.3}))
    assert code == check.EXIT_REGRESSED
    last = out.strip().splitlines()[-1]
    assert "REGRESSION in 2 of 6 cells" in last and "sdpa small 64px" in last
    assert "linear_infsa" not in last and "softmax small" not in last
    assert set(verdicts(out, "latency_ms").values()) == {"ok", "regressed"}


def test_a_50x_regression_on_a_noisy_row_is_never_ok(tmp_path, capsys):
    # within-window noise of 150% of the median and large drift between trials
    base = trial_rows(noise=1.5, drift=0.5)
    code, out, _ = run(
        tmp_path, capsys, trial_rows(noise=1.5, drift=0.5, seed=1, slow={"sdpa": 50}), baseline=base
    )
    assert code == check.EXIT_REGRESSED
    sdpa = {k: v for k, v in verdicts(out, "throughput_img_s").items() if k.startswith("sdpa")}
    assert "regressed" in sdpa.values() and "ok" not in sdpa.values()


def test_without_raw_steps_a_huge_recorded_spread_cannot_make_it_pass(tmp_path, capsys):
    """Old rows (no step_times_ms): the p10..p90 envelope widens the interval, so a slowdown
    hidden by it is inconclusive, never ok; a 50x slowdown is still a regression."""
    spread = {"step_times_ms": None}
    base = trial_rows(trials=1, **{n: spread for n, _ in CELLS})
    base["latency_ms_p10"] *= 0.2
    base["latency_ms_p90"] *= 5
    slower = trial_rows(
        trials=1, seed=1, slow={"sdpa": 1.3, "linear_infsa": 50}, **{n: spread for n, _ in CELLS}
    )
    code, out, _ = run(tmp_path, capsys, slower, baseline=base)
    assert code == check.EXIT_REGRESSED
    latency = verdicts(out, "latency_ms")
    assert {v for k, v in latency.items() if k.startswith("sdpa")} == {"inconclusive"}
    assert {v for k, v in latency.items() if k.startswith("linear_infsa")} == {"regressed"}
    assert "p10..p90 envelope" in out


def test_noise_that_hides_a_regression_of_the_tolerance_is_inconclusive(tmp_path, capsys):
    noisy = dict(noise=0.4, drift=0.25)
    code, out, _ = run(
        tmp_path,
        capsys,
        trial_rows(seed=1, slow={"sdpa": 1.12}, **noisy),
        baseline=trial_rows(**noisy),
    )
    assert code == check.EXIT_INCONCLUSIVE, out
    assert "INCONCLUSIVE" in out.splitlines()[-1] and "none regressed" in out.splitlines()[-1]
    assert "noise: bound <= " in out and "beyond the tolerance" in out


@pytest.mark.parametrize("factor", [1.0, 1.3])
def test_untrustworthy_timing_is_never_ok_and_never_a_regression(tmp_path, capsys, factor):
    flagged = {"timing_valid": False, "timing_note": "threads waited for a CPU 37%"}
    current = trial_rows(seed=1, slow={"sdpa": factor}, sdpa=flagged)
    code, out, _ = run(tmp_path, capsys, current)
    assert code == check.EXIT_INCONCLUSIVE
    sdpa = {k: v for k, v in verdicts(out, "latency_ms").items() if k.startswith("sdpa")}
    assert set(sdpa.values()) == {"inconclusive"} and "untrustworthy timing" in out
    memory = {k: v for k, v in verdicts(out, "peak_mem_bytes").items() if k.startswith("sdpa")}
    assert set(memory.values()) == {"ok"}  # memory does not depend on contention


def test_ok_to_oom_is_a_regression(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, trial_rows(linear_infsa={"status": "oom"}))
    assert code == check.EXIT_REGRESSED
    assert "linear_infsa small 64px b1 infer bfloat16 cpu status ok -> oom" in out


def test_changed_flops_is_a_regression(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, trial_rows(softmax={"flops": 123}))
    assert code == check.EXIT_REGRESSED
    assert "softmax small 128px b1 infer bfloat16 cpu flops" in out.splitlines()[-1]


def test_a_uniformly_slower_machine_passes_when_normalised(tmp_path, capsys):
    slower = {name: 1.2 for name, _ in CELLS}
    code, _, _ = run(tmp_path, capsys, trial_rows(seed=1, slow=slower))
    assert code == check.EXIT_REGRESSED  # without normalising it looks like a regression
    code, out, _ = run(tmp_path, capsys, trial_rows(seed=1, slow=slower), "--normalise", "softmax")
    assert code == check.EXIT_OK and "normalised to softmax" in out
    relative = slower | {"sdpa": 1.2 * 1.3}
    code, out, _ = run(
        tmp_path, capsys, trial_rows(seed=1, slow=relative), "--normalise", "softmax"
    )
    assert code == check.EXIT_REGRESSED and "sdpa" in out.splitlines()[-1]


def test_new_and_missing_cells_are_listed(tmp_path, capsys):
    current = trial_rows(seed=1)
    current = pd.concat(
        [
            current[current["attention"] != "sdpa"],
            pd.DataFrame([row("swin", 64, model="small", device="cpu")]),
        ]
    )
    code, out, _ = run(tmp_path, capsys, current)
    assert code == check.EXIT_OK
    assert "new (not in baseline): swin small 64px" in out
    assert sorted(line for line in out.splitlines() if line.startswith("missing")) == [
        f"missing (not in current): sdpa small {res}px b1 infer bfloat16 cpu" for res in (128, 64)
    ]


@pytest.mark.parametrize("content", ["", "not,a\n\x00\x01", "attention,status\n"])
def test_empty_or_corrupt_baseline_is_unusable(tmp_path, capsys, content):
    (tmp_path / "bad.csv").write_text(content)
    trial_rows().to_csv(tmp_path / "cur.csv", index=False)
    code = check.main(
        ["--baseline", str(tmp_path / "bad.csv"), "--current", str(tmp_path / "cur.csv")]
    )
    assert code == check.EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert err.startswith("attnbench-check: unusable input: baseline") and "Traceback" not in err


def test_missing_baseline_no_common_cells_schema_and_bad_tolerance_are_unusable(tmp_path, capsys):
    trial_rows().to_csv(tmp_path / "cur.csv", index=False)
    code = check.main(
        ["--baseline", str(tmp_path / "nope.csv"), "--current", str(tmp_path / "cur.csv")]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code, _, err = run(tmp_path, capsys, trial_rows().assign(model="paper_4l"))
    assert code == 2 and "no cell in common" in err
    code, _, err = run(tmp_path, capsys, trial_rows().assign(schema_version=99))
    assert code == 2 and "schema_version 99" in err
    code, _, err = run(tmp_path, capsys, trial_rows(), "--tolerance", "speed=0.1")
    valid = err.split("valid: ")[1]
    assert code == 2 and all(m in valid for m in ("throughput_img_s", "latency_ms", "peak_mem"))
    code, _, err = run(tmp_path, capsys, trial_rows(), "--tolerance", "latency_ms=3")
    assert code == 2 and "fractions in [0, 1)" in err


def test_tolerances_from_flags_and_config(tmp_path, capsys):
    slower = trial_rows(seed=1, slow={"sdpa": 1.3})
    loose = [
        "--tolerance",
        "throughput_img_s=0.5",
        "--tolerance",
        "latency_ms=0.5",
        "--tolerance",
        "energy_j_per_img=0.5",
    ]
    code, _, _ = run(tmp_path, capsys, slower, *loose)
    assert code == check.EXIT_OK
    config = tmp_path / "check.yaml"
    config.write_text(
        "tolerance: {throughput_img_s: 0.5, latency_ms: 0.5, energy_j_per_img: 0.5}\n"
    )
    code, _, _ = run(tmp_path, capsys, slower, "--config", str(config))
    assert code == check.EXIT_OK


def test_ab_compares_the_two_revisions_of_one_run(tmp_path, capsys):
    both = pd.concat(
        [
            trial_rows(trials=10, revision="aaaaaaaaaaaa"),
            trial_rows(trials=10, seed=1, revision="bbbbbbbbbbbb", slow={"linear_infsa": 1.3}),
        ]
    )
    for i, values in enumerate(both.to_dict("records")):
        write_row(tmp_path / "run" / f"job{i}", values)
    plan = {
        "revisions": [
            {"ref": "HEAD~1", "sha": "aaaaaaaaaaaa"},
            {"ref": "HEAD", "sha": "bbbbbbbbbbbb"},
        ]
    }
    (tmp_path / "run" / "sweep.json").write_text(json.dumps(plan))
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*"))
    code = check.main(["--ab", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == check.EXIT_REGRESSED
    assert "A/B HEAD~1 (aaaaaaaaaaaa) -> HEAD (bbbbbbbbbbbb)" in out.splitlines()[-1]
    assert "linear_infsa small 64px" in out.splitlines()[-1]
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*")) == before
    # the same run as a plain --current must say which revision to check
    code = check.main(["--baseline", str(tmp_path / "run"), "--current", str(tmp_path / "run")])
    assert code == 2 and "pick one with --revision" in capsys.readouterr().err
    code = check.main(
        [
            "--baseline",
            str(tmp_path / "run"),
            "--current",
            str(tmp_path / "run"),
            "--revision",
            "aaaa",
            "--exact-only",
        ]
    )
    assert code == check.EXIT_OK and "exact metrics only" in capsys.readouterr().out
    # a baseline of one revision (here null: measured from a working tree) is used as it is,
    # while the side of several revisions is narrowed to the one named
    trial_rows().to_csv(tmp_path / "baseline.csv", index=False)
    argv = ["--baseline", str(tmp_path / "baseline.csv"), "--current", str(tmp_path / "run")]
    assert check.main([*argv, "--revision", "bbbb", "--exact-only"]) == check.EXIT_OK
    capsys.readouterr()
    assert check.main([*argv, "--revision", "cccc", "--exact-only"]) == 2
    assert "--revision cccc: current holds aaaaaaaaaaaa, bbbbbbbbbbbb" in capsys.readouterr().err


def test_ab_needs_two_revisions(tmp_path, capsys):
    trial_rows().to_csv(tmp_path / "one.csv", index=False)
    assert check.main(["--ab", str(tmp_path / "one.csv")]) == 2
    assert "needs exactly two revisions, found 1" in capsys.readouterr().err


def test_github_action_benchmark_json(tmp_path, capsys):
    bigger, smaller = tmp_path / "bigger.json", tmp_path / "smaller.json"
    code, _, _ = run(
        tmp_path,
        capsys,
        trial_rows(seed=1),
        "--github-bigger",
        str(bigger),
        "--github-smaller",
        str(smaller),
    )
    assert code == check.EXIT_OK
    up, down = json.loads(bigger.read_text()), json.loads(smaller.read_text())
    assert len(up) == 6 and all(e["unit"] == "img/s" and e["value"] > 0 for e in up)
    assert {e["unit"] for e in down} == {"ms", "J/img", "B"}


def test_the_verdict_rule():
    def verdict(point, lo, hi, p, bounds=None, higher_is_better=False, tol=0.1):
        bounds = bounds or (lo, hi)
        return check.judge(stats.Estimate(point, lo, hi, p, bounds), tol, higher_is_better, p)

    assert verdict(1.3, 1.2, 1.4, None) == "regressed"
    assert verdict(1.3, 1.2, 1.4, 0.01) == "regressed"
    assert verdict(1.3, 1.2, 1.4, 0.06) == "inconclusive"  # not after correction
    assert verdict(1.3, 0.9, 1.7, None) == "inconclusive"
    assert verdict(1.05, 1.01, 1.09, 0.001) == "ok"  # real, but within tolerance
    assert verdict(1.05, 1.01, 1.11, None) == "inconclusive"
    # ok is one-sided: the 95% bound on worse decides, not the two-sided interval's end
    assert verdict(1.05, 1.01, 1.11, 0.001, bounds=(1.02, 1.095)) == "ok"
    assert verdict(1.05, 1.01, 1.11, 0.001, bounds=(1.02, 1.105)) == "inconclusive"
    assert verdict(0.8, 0.75, 0.85, 0.001) == "improved"
    assert verdict(0.88, 0.75, 1.01, 0.001, bounds=(0.78, 0.99)) == "improved"
    assert verdict(0.88, 0.75, 1.01, 0.001, bounds=(0.78, 1.01)) == "ok"  # not surely better
    assert verdict(1 / 1.3, 1 / 1.4, 1 / 1.2, 0.001, higher_is_better=True) == "regressed"
    # throughput: its lower bound is the one on worse
    assert verdict(0.97, 0.89, 1.05, 0.5, bounds=(0.91, 1.04), higher_is_better=True) == "ok"
    assert verdict(0.97, 0.89, 1.05, 0.5, bounds=(0.9, 1.04), higher_is_better=True) == (
        "inconclusive"
    )
    assert verdict(50.0, 0.01, 5000.0, None) == "inconclusive"


def test_holm_adjusts_by_rank_and_keeps_the_order():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.9, 0.5]) == [1.0, 1.0]  # 0.5 x 2 caps at 1; the rest not below it
    assert stats.holm([]) == []


def test_p_values_match_the_textbook_tests():
    rng = np.random.default_rng(3)
    base, cur = rng.lognormal(0, 0.05, 5), rng.lognormal(0.08, 0.05, 4)
    welch = scipy.stats.ttest_ind(np.log(cur), np.log(base), equal_var=False)
    assert stats.trial_ratio(base, cur).p == pytest.approx(welch.pvalue, rel=1e-9)
    for n in (6, 10, 17):  # pairs: Wilcoxon's signed-rank test, exact
        logs = rng.normal(0.01, 0.02, n)
        exact = scipy.stats.wilcoxon(logs, method="exact")
        assert stats.paired_ratio(np.ones(n), np.exp(logs)).p == pytest.approx(exact.pvalue)


def test_paired_interval_is_the_textbook_hodges_lehmann_interval():
    """Ten pairs: the two-sided 95% critical value of the signed-rank statistic is 8 (tables:
    P(T <= 8) = 0.024), so the interval runs from the 9th smallest to the 9th largest of the
    55 pairwise averages of the log ratios, around their median."""
    logs = np.random.default_rng(5).normal(0.03, 0.02, 10)
    walsh = sorted((a + b) / 2 for a, b in itertools.combinations_with_replacement(logs, 2))
    estimate = stats.paired_ratio(np.ones(10), np.exp(logs))
    assert (estimate.lo, estimate.point, estimate.hi) == pytest.approx(
        (np.exp(walsh[8]), np.exp(np.median(walsh)), np.exp(walsh[-9]))
    )
    # one-sided: P(T <= 10) = 0.042 for ten pairs, so each 95% bound is the 11th from its end
    assert estimate.bounds == pytest.approx((np.exp(walsh[10]), np.exp(walsh[-11])))
    one_bad = np.append(logs[:9], 2.0)  # a 7x outlier moves it by less than the noise
    assert stats.paired_ratio(np.ones(10), np.exp(one_bad)).point < np.exp(np.median(walsh) + 0.02)


def test_one_slow_pair_in_a_family_of_comparisons_is_not_a_regression(tmp_path, capsys):
    """9 of 10 paired trials 6% slower in one cell of six: p = 2/512 alone (a 95% interval
    excludes 1), but not after Holm's correction over the run's 24 comparisons; 10 of 10 is
    (2/1024 x 24 = 0.047)."""
    base = trial_rows(trials=10, noise=0.001, drift=0.001, revision="aaaaaaaaaaaa")
    cur = base.assign(revision="bbbbbbbbbbbb")
    pick = (cur["attention"] == "sdpa") & (cur["resolution"] == 64)

    def slower(at):  # the whole row, its steps and what they give
        for column, factor in (("latency_ms", 1.06), ("throughput_img_s", 1 / 1.06)):
            cur.loc[at, column] *= factor
        cur.loc[at, "step_times_ms"] = json.dumps(
            list(np.asarray(json.loads(cur.loc[at, "step_times_ms"])) * 1.06)
        )

    for at in cur.index[pick][:9]:  # nine of the ten trials slower
        slower(at)

    def ab(current):
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        for i, values in enumerate(pd.concat([base, current]).to_dict("records")):
            write_row(run / f"job{i}", values)
        revisions = [{"ref": "A", "sha": "aaaaaaaaaaaa"}, {"ref": "B", "sha": "bbbbbbbbbbbb"}]
        (run / "sweep.json").write_text(json.dumps({"revisions": revisions}))
        code = check.main(["--ab", str(run), "--tolerance", "latency_ms=0.05"])
        return code, capsys.readouterr().out

    code, out = ab(cur)
    assert code == check.EXIT_INCONCLUSIVE, out
    assert "Holm's correction over 24 comparisons" in out
    latency = verdicts(out, "latency_ms")
    assert {v for k, v in latency.items() if k.startswith("sdpa small 64px")} == {"inconclusive"}
    slower(cur.index[pick][9])  # the tenth too
    code, out = ab(cur)
    assert code == check.EXIT_REGRESSED, out
    assert "sdpa small 64px" in out.splitlines()[-1] and "softmax" not in out.splitlines()[-1]


def test_a_row_whose_summary_contradicts_its_steps_is_refused_by_name(tmp_path, capsys):
    """40% slower by its throughput and latency, unchanged by its steps: not a result."""
    current = trial_rows(seed=1)
    at = (current["attention"] == "sdpa") & (current["resolution"] == 128) & (current["trial"] == 1)
    current.loc[at, "throughput_img_s"] /= 1.4
    current.loc[at, "latency_ms"] *= 1.4
    code, _, err = run(tmp_path, capsys, current)
    assert code == check.EXIT_UNUSABLE
    assert "current" in err and "the row of sdpa small 128px" in err and "trial 1" in err
    assert "contradicts itself: latency_ms is" in err
    edited = trial_rows(seed=1)
    edited.loc[at, "iters"] = 3
    assert run(tmp_path, capsys, edited)[0] == check.EXIT_UNUSABLE


def test_each_comparison_says_the_smallest_slowdown_this_run_could_see():
    # ten paired trials with +-2% noise: a regression needs all ten worse after the correction
    noise = np.array([0.98, 0.99, 1.0, 1.01, 1.02, 0.985, 0.995, 1.005, 1.015, 1.0])
    estimate = stats.paired_ratio(np.ones(10), noise)
    alpha = check.ALPHA / 18
    seen = stats.detectable(estimate, alpha, 0.05)
    assert seen == pytest.approx(max(1 / (0.98 / estimate.point), 1.05))  # the best pair too
    assert stats.detectable(estimate, alpha, 0.0) == pytest.approx(estimate.point / 0.98)
    three = stats.paired_ratio(np.ones(3), noise[:3])
    assert stats.detectable(three, alpha, 0.05) == float("inf")  # 3 pairs can never decide
    wide = stats.trial_ratio([1.0, 1.1, 0.9], [1.0, 1.12, 0.88])
    assert stats.detectable(wide, alpha, 0.05) > 1.3  # 10% spread over 3 trials: not 5%
    assert check._detectable(None) == "" and check._detectable(1.072) == ">= 7.2% worse"


def test_sides_measured_differently_are_not_compared(tmp_path, capsys):
    """A baseline whose CPU memory was the resident high-water mark (rows before v5) against
    one from torch's allocator: 30% "less memory" is a change of method, not of the code; and
    timing under other malloc settings is not compared either."""
    baseline = trial_rows().assign(
        mem_source="cpu:vmhwm_after_reset", allocator_conf="glibc defaults"
    )
    current = trial_rows(seed=1).assign(allocator_conf="glibc defaults")
    current["peak_mem_bytes"] *= 0.7
    code, out, _ = run(tmp_path, capsys, current, baseline=baseline)
    assert code == check.EXIT_INCONCLUSIVE, out
    assert set(verdicts(out, "peak_mem_bytes").values()) == {"inconclusive"}
    assert "measured differently: baseline mem_source=cpu:vmhwm_after_reset" in out
    assert set(verdicts(out, "latency_ms").values()) == {"ok"}  # same allocator: compared
    current = current.assign(allocator_conf="glibc M_MMAP_THRESHOLD=33554432")
    code, out, _ = run(tmp_path, capsys, current, baseline=baseline)
    assert set(verdicts(out, "latency_ms").values()) == {"inconclusive"}
    assert "current allocator_conf=glibc M_MMAP_THRESHOLD=33554432" in out


def ab_run(tmp_path, base, current):
    """An A/B sweep's directory from two sides' rows (revisions aaaa.. and bbbb..)."""
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    for i, values in enumerate(pd.concat([base, current]).to_dict("records")):
        write_row(run / f"job{i}", values)
    revisions = [{"ref": "A", "sha": "aaaaaaaaaaaa"}, {"ref": "B", "sha": "bbbbbbbbbbbb"}]
    (run / "sweep.json").write_text(json.dumps({"revisions": revisions}))
    return run


def test_calibrate_writes_the_tolerances_an_a_a_holds(tmp_path, capsys):
    """An A/A with 1% noise between trials: the tolerances written cover its intervals, so the
    same run checked with them is ok; a tighter tolerance than the noise would not be."""
    base = trial_rows(trials=10, noise=0.01, drift=0.01, revision="aaaaaaaaaaaa")
    again = trial_rows(trials=10, noise=0.01, drift=0.01, seed=7, revision="bbbbbbbbbbbb")
    run = ab_run(tmp_path, base, again)
    out = tmp_path / "tolerances.yaml"
    assert check.main(["--ab", str(run), "--calibrate", str(out)]) == check.EXIT_OK
    assert "calibrated tolerances written to" in capsys.readouterr().out
    tolerance = yaml.safe_load(out.read_text())["tolerance"]
    assert set(tolerance) == {
        "latency_ms",
        "throughput_img_s",
        "energy_j_per_img",
        "peak_mem_bytes",
    }
    assert all(check.FLOOR <= t < 0.1 for t in tolerance.values()), tolerance
    assert "smallest detectable slowdown" in out.read_text()
    assert check.main(["--ab", str(run), "--config", str(out)]) == check.EXIT_OK
    tight = ["--tolerance", "latency_ms=0.001"]
    assert check.main(["--ab", str(run), *tight]) == check.EXIT_INCONCLUSIVE


def test_calibrate_refuses_sides_that_differ(tmp_path, capsys):
    base = trial_rows(trials=10, noise=0.01, drift=0.01, revision="aaaaaaaaaaaa")
    slower = trial_rows(
        trials=10, noise=0.01, drift=0.01, seed=7, revision="bbbbbbbbbbbb", slow={"sdpa": 1.2}
    )
    out = tmp_path / "tolerances.yaml"
    code = check.main(["--ab", str(ab_run(tmp_path, base, slower)), "--calibrate", str(out)])
    assert code == check.EXIT_UNUSABLE and not out.exists()
    assert "differ significantly (sdpa small" in capsys.readouterr().err


def test_a_few_flagged_trials_are_left_out_and_many_leave_it_undecided(tmp_path, capsys):
    """One of 12 trials flagged (a burst of noise on a shared machine): judged on the other 11,
    saying so; four of 12 flagged (more than a quarter): timing not judged at all."""
    base = trial_rows(trials=12, noise=0.01, drift=0.01, revision="aaaaaaaaaaaa")
    again = trial_rows(trials=12, noise=0.01, drift=0.01, seed=7, revision="bbbbbbbbbbbb")
    sdpa = again.index[(again["attention"] == "sdpa") & (again["resolution"] == 64)]
    again.loc[sdpa[:1], "timing_valid"] = False
    code = check.main(
        ["--ab", str(ab_run(tmp_path, base, again)), "--tolerance", "latency_ms=0.03"]
    )
    out = capsys.readouterr().out
    assert code == check.EXIT_OK, out
    assert "over 11 paired trials, 1 flagged trials left out" in out
    again.loc[sdpa[:4], "timing_valid"] = False
    code = check.main(
        ["--ab", str(ab_run(tmp_path, base, again)), "--tolerance", "latency_ms=0.03"]
    )
    out = capsys.readouterr().out
    assert code == check.EXIT_INCONCLUSIVE
    assert {
        v for k, v in verdicts(out, "latency_ms").items() if k.startswith("sdpa small 64px")
    } == {"inconclusive"}
