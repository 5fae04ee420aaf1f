"""The performance history: runs added to a store (also two at once), change points found by
E-divisive means with a t-test and named by commit, an acknowledged regression that stops
failing, a corrupt file named and the rest still read, and the page in headless Chromium."""

import itertools
import multiprocessing
import re

import numpy as np
import pandas as pd
import pytest
from fixtures import row
from test_browser import CHROMIUM, dump_dom

from harness.data import history
from harness.reporting import changepoints
from harness.reporting import history as cli

CELLS = (("softmax", 224, 200.0), ("sdpa", 224, 300.0), ("linear_infsa", 448, 80.0))


def run_rows(commit, when, factor=None, trials=3, seed=0, valid=True, noise=0.01):
    """One run's rows: three cells, `trials` trials each; `factor` = {mechanism: slowdown}."""
    rng = np.random.default_rng(seed)
    out = []
    for name, res, thr in CELLS:
        for trial in range(trials):
            slow = (factor or {}).get(name, 1.0) * float(np.exp(rng.normal(0, noise)))
            out.append(
                row(
                    name,
                    res,
                    throughput=thr / slow,
                    device="cpu",
                    trial=trial,
                    timing_valid=valid,
                    git_sha=commit,
                    timestamp=when,
                    hostname="ci-runner",
                    cpu_model="Xeon",
                )
            )
    return pd.DataFrame(out)


def fill(store, runs=40, step_at=None, step=1.10, victim="sdpa", **kw):
    """`runs` runs, one a minute; from run `step_at` on `victim` is `step` times slower."""
    for i in range(runs):
        slow = {victim: step} if step_at is not None and i >= step_at else None
        when = f"2026-12-01T{10 + i // 60:02d}:{i % 60:02d}:00+00:00"
        cells = history.summarise(
            run_rows(f"c{i:04d}", when, slow, seed=i, **kw),
            f"c{i:04d}aaaaaaaa",
            when,
            "ci-runner (Xeon)",
            "sweep=ab",
        )
        history.add(store, cells)


def test_a_run_file_is_plain_csv_keyed_by_run_and_cell(tmp_path):
    fill(tmp_path, runs=1)
    (path,) = (tmp_path / history.RUNS).glob("*.csv")
    plain = pd.read_csv(path)  # no attnbench needed to read it
    assert len(plain) == len(CELLS)
    assert {"commit", "time", "machine", "settings", "attention", "resolution", "threads"} <= set(
        plain.columns
    )
    assert {"throughput_img_s", "throughput_img_s_lo", "throughput_img_s_hi"} <= set(plain.columns)
    first = plain[plain["attention"] == "softmax"].iloc[0]
    assert first["throughput_img_s_lo"] < first["throughput_img_s"] < first["throughput_img_s_hi"]
    assert first["commit"] == "c0000aaaaaaaa" and first["trusted"]


def fill_range(store, start):
    for i in range(start, start + 15):
        when = f"2026-12-01T11:{i:02d}:00+00:00"
        cells = history.summarise(run_rows(f"p{i}", when), f"p{i}", when, "m", "s")
        history.add(store, cells)


def test_two_jobs_adding_at_once_both_land(tmp_path):
    procs = [multiprocessing.Process(target=fill_range, args=(tmp_path, s)) for s in (0, 30)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    loaded = history.load(tmp_path)
    assert loaded.problems == [] and loaded.cells["run"].nunique() == 30
    assert not list((tmp_path / history.RUNS).glob(".*.tmp"))  # no half-written file left


def test_the_cache_sees_new_and_removed_runs(tmp_path):
    fill(tmp_path, runs=6)
    assert history.load(tmp_path).cells["run"].nunique() == 6  # builds the cache
    assert (tmp_path / history.CACHE).exists()
    fill(tmp_path / "other", runs=1)
    newer = next((tmp_path / "other" / history.RUNS).glob("*.csv"))
    newer.rename(tmp_path / history.RUNS / newer.name)
    gone = sorted((tmp_path / history.RUNS).glob("*.csv"))[0]
    gone.unlink()
    assert history.load(tmp_path).cells["run"].nunique() == 6  # one in, one out


def test_a_corrupt_file_is_named_and_the_rest_still_read(tmp_path, capsys):
    fill(tmp_path, runs=12)
    bad = tmp_path / history.RUNS / "2026-12-01T120000-broken.csv"
    bad.write_text("this is not,a history\nrun file\n")
    code = cli.main(["check", "--store", str(tmp_path)])
    out = capsys.readouterr()
    assert code == cli.EXIT_UNUSABLE
    assert str(bad) in out.err and "not a history run file" in out.err
    assert "12 runs" in out.out


def test_a_regression_is_found_at_its_commit_and_fails_until_acknowledged(tmp_path, capsys):
    fill(tmp_path, runs=40, step_at=25, step=1.10)
    code = cli.main(["check", "--store", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_REGRESSED, out
    verdict = out.splitlines()[-1]
    assert "sdpa paper_4l 224px" in verdict and "c0025" in verdict
    assert "softmax" not in verdict and "linear_infsa" not in verdict
    assert (
        cli.main(["ack", "--store", str(tmp_path), "--commit", "c0025", "--reason", "known"]) == 0
    )
    capsys.readouterr()
    assert cli.main(["check", "--store", str(tmp_path)]) == cli.EXIT_OK
    assert "acknowledged" in capsys.readouterr().out


def test_an_improvement_is_named_and_does_not_fail(tmp_path, capsys):
    fill(tmp_path, runs=30, step_at=15, step=0.85)
    assert cli.main(["check", "--store", str(tmp_path)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "improvement" in out and "c0015" in out


def test_untrustworthy_runs_are_drawn_but_never_decide(tmp_path, capsys):
    fill(tmp_path, runs=20)
    for i in range(20, 30):  # ten flagged runs, all 30% slower: a burst of noise, not a change
        when = f"2026-12-01T12:{i:02d}:00+00:00"
        rows = run_rows(f"u{i}", when, {"sdpa": 1.3}, seed=i, valid=False)
        history.add(tmp_path, history.summarise(rows, f"u{i}", when, "ci-runner (Xeon)", "s"))
    assert cli.main(["check", "--store", str(tmp_path)]) == cli.EXIT_OK
    capsys.readouterr()
    cells = history.load(tmp_path).cells
    page = cli.render(cells, cli.changes(cells, []), [])
    charts = page.count('<svg class="chart"')
    assert charts == len(CELLS) * 3  # throughput, latency, memory (no energy on this cpu)
    assert page.count('class="untrusted"') == 10 * charts  # every flagged run drawn, hollow


def test_e_divisive_statistic_matches_its_definition():
    """The vectorised statistic against the formula, split by split, on a small series."""
    x = np.random.default_rng(2).normal(0, 1, 14)
    x[9:] += 5
    best, stat = changepoints._energy(x)
    n = len(x)

    def q(tau):
        a, b = x[:tau], x[tau:]
        m, k = len(a), len(b)
        across = np.abs(a[:, None] - b[None, :]).mean()
        within_a = np.abs(a[:, None] - a[None, :]).mean()
        within_b = np.abs(b[:, None] - b[None, :]).mean()
        return m * k / n * (2 * across - within_a - within_b)

    split = range(changepoints.MIN_SIZE, n - changepoints.MIN_SIZE + 1)
    assert best == max(split, key=q) == 9
    assert stat == pytest.approx(q(9))


@pytest.mark.parametrize("seed", range(5))
def test_flat_noise_has_no_change_point_and_a_step_is_found_where_it_is(seed):
    rng = np.random.default_rng(seed)
    flat = np.exp(rng.normal(0, 0.01, 300))  # a 5% step is five times the noise
    assert changepoints.find(flat) == []
    stepped = flat.copy()
    stepped[170:] *= 1.05
    (change,) = changepoints.find(stepped)
    assert abs(change.index - 170) <= 1
    assert change.lo < 1.05 < change.hi and change.p < changepoints.MAX_P


def test_an_a_b_run_adds_its_change_side(tmp_path):
    base = run_rows("x", "2026-12-01T10:00:00+00:00").assign(revision="aaaaaaaaaaaa")
    change = run_rows("x", "2026-12-01T10:00:00+00:00", {"sdpa": 2.0}).assign(
        revision="bbbbbbbbbbbb"
    )
    run = tmp_path / "ab"
    run.mkdir()
    pd.concat([base, change]).to_csv(run / "results.csv", index=False)
    plan = {"revisions": [{"ref": "A", "sha": "aaaaaaaaaaaa"}, {"ref": "B", "sha": "bbbbbbbbbbbb"}]}
    (run / "sweep.json").write_text(__import__("json").dumps(plan))
    store = tmp_path / "store"
    assert cli.main(["add", str(run), "--store", str(store)]) == 0
    cells = history.load(store).cells
    assert set(cells["commit"]) == {"bbbbbbbbbbbb"}
    sdpa = cells[cells["attention"] == "sdpa"]["throughput_img_s"].iloc[0]
    assert sdpa == pytest.approx(150, rel=0.05)  # the slower side's, not a mix


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_page_shows_every_series_and_its_change_points_in_a_browser(tmp_path):
    fill(tmp_path / "store", runs=40, step_at=25)
    out = tmp_path / "page"
    assert cli.main(["report", "--store", str(tmp_path / "store"), "--out", str(out)]) == 0
    page = (out / "history.html").read_text()
    probe = """<script>window.addEventListener('load', function () {
      var charts = Array.from(document.querySelectorAll('svg.chart'));
      var drawn = charts.filter(function (c) { var b = c.getBBox(); return b.width > 0; });
      var probe = document.createElement('div'); probe.id = 'probe';
      probe.textContent = 'charts ' + drawn.length + '/' + charts.length +
        ' marks ' + document.querySelectorAll('svg line.regression').length;
      document.body.appendChild(probe);
    });</script>"""
    done = dump_dom(page, probe, tmp_path)
    found = re.search(r'<div id="probe">charts (\d+)/(\d+) marks (\d+)</div>', done.stdout)
    assert found, done.stdout[-2000:]
    drawn, total, marks = map(int, found.groups())
    # three cells x the three metrics with values (throughput, latency, memory; no energy here)
    assert total == drawn == len(CELLS) * 3 and marks >= 2  # sdpa's throughput and latency
    first_table = done.stdout.index('id="changes"')
    assert first_table < done.stdout.index('class="chart"')  # the change points come first
    assert "c0025" in done.stdout[first_table : done.stdout.index('class="chart"')]
    text = re.sub(
        r"<[^>]+>", " ", re.sub(r"<(script|style)>.*?</\1>", " ", done.stdout, flags=re.S)
    )
    assert not re.search(r"\b(None|nan|NaN|undefined)\b", text)


def test_bad_input_is_named(tmp_path, capsys):
    assert cli.main(["check", "--store", str(tmp_path / "none")]) == cli.EXIT_UNUSABLE
    assert "is not a history store" in capsys.readouterr().err
    code = cli.main(
        ["ack", "--store", str(tmp_path), "--commit", "c1", "--reason", "r", "--metric", "speed"]
    )
    assert code == cli.EXIT_UNUSABLE
    assert "valid: " in capsys.readouterr().err
    assert list(itertools.chain((tmp_path).glob("**/*.yaml"))) == []
