"""The report from fixture rows, checked through its matplotlib objects and its files."""

import json
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
from fixtures import ladder, row

from harness.reporting import analysis, figures, report


def cells(energy=True, **change):
    return analysis.aggregate(ladder(energy=energy).assign(**change))


def test_latency_figure_is_log_log_per_mode_with_readable_ticks_and_stops():
    fig = figures.latency(cells())
    infer, train = fig.axes[:2]
    for ax in (infer, train):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "resolution" in ax.get_xlabel() and "latency" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) >= 3 and not any("10^" in t or "$" in t for t in labels)
    assert infer.get_title() == "inference" and train.get_title() == "training step"
    oom = [line for line in infer.get_lines() if line.get_gid() == "oom:softmax"]
    assert len(oom) == 1 and list(oom[0].get_xdata()) == [2048]  # where softmax stopped
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "out of memory here" in legend
    quiet = figures.latency(cells().query("status == 'ok'"))
    assert "out of memory here" not in [t.get_text() for t in quiet.legends[0].get_texts()]


def test_without_energy_the_figures_draw_what_exists_and_say_why():
    rows = cells(energy=False)
    tiers = figures.tiers(rows, 1024)
    assert tiers.axes[0].get_xlabel() == "peak memory (MiB)"
    assert tiers.axes[0].collections  # points drawn, not an empty box
    assert "Energy not measured on NVIDIA H100 80GB HBM3" in tiers._supxlabel.get_text()
    dash = figures.dashboard(rows, 1024)
    assert len(dash.axes) == 3 and all(ax.patches for ax in dash.axes)  # no empty panel
    rate = figures.arithmetic_rate(rows, 1024)
    assert len(rate.axes) == 1 and "FLOP/s" in rate.axes[0].get_ylabel()


def test_tiers_figure_colours_by_tier_stars_linear_infsa_and_keeps_the_legend_off_the_data():
    fig = figures.tiers(cells(), 1024)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "energy per image (J)" and ax.get_ylabel() == "throughput (img/s)"
    star = [c for c in ax.collections if c.get_gid() == "linear_infsa"][0]
    assert tuple(star.get_facecolor()[0][:3]) == (1.0, 0.0, 0.0)
    legend = ax.get_legend()
    assert {"O(N^2)", "O(N)", "linear_infsa"} <= {t.get_text() for t in legend.get_texts()}
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # outside the axes


def test_untrustworthy_cells_are_marked_not_drawn_like_the_others():
    rows = ladder()
    rows.loc[rows["attention"] == "sdpa", "timing_valid"] = False
    fig = figures.dashboard(analysis.aggregate(rows), 1024)
    throughput = fig.axes[2]
    hatched = [p.get_hatch() for p in throughput.patches]
    names = [t.get_text() for t in throughput.get_yticklabels()]
    assert hatched[names.index("sdpa")] == "//" and hatched[names.index("softmax")] in (None, "")
    assert "untrustworthy timing" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_dashboard_speedups_are_throughput_ratios_with_intervals():
    fig = figures.dashboard(cells(), 1024)
    (over_softmax,) = [ax for ax in fig.axes if ax.get_title() == "speed-up over softmax"]
    assert {ax.get_title() for ax in fig.axes} >= {"speed-up over sdpa", "throughput"}
    widths = {
        t.get_text(): p.get_width()
        for t, p in zip(over_softmax.get_yticklabels(), over_softmax.patches, strict=False)
    }
    ok = ladder().query("resolution == 1024 and mode == 'infer'").set_index("attention")
    expected = ok.loc["linear_infsa", "throughput_img_s"] / ok.loc["softmax", "throughput_img_s"]
    assert widths["linear_infsa"] == pytest.approx(expected)
    assert widths["softmax"] == pytest.approx(1.0)
    bars = [c for c in over_softmax.containers if type(c).__name__ == "BarContainer"][0]
    assert bars.errorbar is not None and bars.errorbar.lines[2]  # the intervals are drawn


def test_colours_are_one_per_mechanism_everywhere_even_past_ten():
    many = [f"m{i:02d}" for i in range(12)]
    palette = figures.colours(many)
    assert len({tuple(palette[n]) for n in many}) == 12
    assert figures.colours()["softmax"] == figures.colours(["softmax"])["softmax"]


def test_depth_figure_only_with_two_depths():
    rows = ladder()
    assert figures.depth(analysis.aggregate(rows), 1024) is None
    deeper = rows.assign(model="paper_24l", depth=24, throughput_img_s=rows["throughput_img_s"] / 6)
    fig = figures.depth(analysis.aggregate(pd.concat([rows, deeper])), 1024)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["paper_4l (4L)", "paper_24l (24L)"]


def test_crossover_says_from_where_a_mechanism_keeps_winning():
    rows = ladder()
    li = rows.attention == "linear_infsa"
    rows.loc[li & (rows.resolution == 224), "throughput_img_s"] = 2000  # an early win...
    rows.loc[li & (rows.resolution == 512), "throughput_img_s"] = 100  # ...that does not last
    cross = analysis.crossover(analysis.aggregate(rows)).set_index(["mode", "mechanism", "against"])
    assert cross.loc[("infer", "linear_infsa", "sdpa"), "wins from"] == "1024²"
    assert cross.loc[("infer", "sdpa", "softmax"), "wins from"] == (
        "224² (already at the smallest size)"
    )
    assert cross.loc[("infer", "softmax", "sdpa"), "wins from"] == "never within 224-4096²"
    margin = cross.loc[("infer", "linear_infsa", "softmax"), "margin there"]
    point, lo, hi = map(float, re.match(r"([\d.]+)x \(([\d.]+)-([\d.]+)\)", margin).groups())
    assert lo <= point <= hi
    assert cross.loc[("infer", "linear_infsa", "sdpa"), "beyond noise"] == "yes"


def test_scaling_exponents_beside_the_claimed_tier():
    fits = analysis.scaling(cells()).set_index(["mechanism", "mode"])
    # ladder: linear_infsa throughput ~ 1/scale (time ~ N^1), sdpa ~ N^1.5
    assert fits.loc[("linear_infsa", "infer"), "time ~ N^k"] == pytest.approx(1.0, abs=0.01)
    assert fits.loc[("sdpa", "infer"), "time ~ N^k"] == pytest.approx(1.5, abs=0.01)
    assert fits.loc[("linear_infsa", "infer"), "claimed"] == "O(N)"
    sentence = analysis.scaling_sentences(fits.reset_index())[0]
    assert re.match(r"\w+ \(infer\): time ~ N\^\d\.\d\d over [\d,]+-[\d,]+ tokens", sentence)


def test_claims_only_where_comparable():
    rows = cells()  # an H100 run of paper_4l
    table, missing = analysis.claims(rows)
    claim = table.set_index("claim")
    assert claim.loc["speed-up, Linear InfViT over the Standard ViT (x)", "paper"] == 13.4
    assert not any(c.startswith("throughput, ") for c in claim.index)  # absolute: other hardware
    assert any("only comparable on the paper's A100" in m for m in missing)
    small, missing = analysis.claims(rows.assign(model="small"))
    assert any("attnbench sweep=paper" in m for m in missing)
    # params and GFLOPs need no measurement: every report has them, computed from the preset
    computed = small.set_index("claim")["measured"]
    assert len(computed) == 6 and all("computed: paper_4l preset" in c for c in computed.index)
    counts = analysis.paper_counts()
    assert computed.filter(like="params, Standard ViT").iloc[0] == counts["softmax"]["params"] / 1e6
    # Linear-InfSA drops the key-query product: fewer FLOPs than softmax attention at 224²
    assert counts["linear_infsa"]["flops"] < counts["softmax"]["flops"]


def test_report_files_are_self_contained(tmp_path):
    rows = ladder(energy=False)
    md, page = report.render(
        {"h100": rows, "h200": rows.assign(throughput_img_s=rows["throughput_img_s"] * 1.5)},
        tmp_path,
    )
    text = page.read_text()
    figures_in_md = [line for line in md.read_text().splitlines() if line.startswith("![")]
    assert len(figures_in_md) >= 8
    assert text.count("data:image/png;base64,") == len(figures_in_md)  # each one embedded
    assert not re.search(r'src="(?!data:)', text) and "http" not in text
    assert "Runs side by side" in text and "h200 / h100" in text
    assert "<nav><b>Contents</b>" in text and 'href="#summary-h100"' in text
    assert 'table class="sortable" id="cells"' in text and 'id="cells-filter"' in text
    words = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)>.*?</\1>", " ", text, flags=re.S))
    assert not re.search(r"\b(None|nan|NaN)\b", words)
    assert "skipped_oom" in md.read_text() and "RuntimeError: boom" in md.read_text()
    assert "Finding: fastest at 1024² (inference): linear_infsa" in md.read_text()


def test_summary_counts_measurements_only_when_there_were_several_trials():
    one = ladder(energy=False)
    first = report.summary("one", one, analysis.aggregate(one)).bullets[0]
    assert first.startswith(f"What ran: {len(analysis.aggregate(one))} cells of ")
    three = pd.concat([one.assign(trial=t) for t in range(3)], ignore_index=True)
    first = report.summary("three", three, analysis.aggregate(three)).bullets[0]
    assert f"({len(three)} measurements over trials)" in first


def _sweep(tmp_path, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "sweep=smoke",
            f"hydra.sweep.dir={tmp_path}/sweep",
            "timing.window_s=0.1",
            "timing.warmup_s=0",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_smoke_sweep_end_to_end_and_resume_measures_only_missing_cells(tmp_path):
    done = _sweep(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "[6/6]" in done.stdout and "6 cells: 6 ok" in done.stdout
    sweep = tmp_path / "sweep"
    written = pd.read_csv(sweep / "results.csv")
    assert sorted(zip(written["attention"], written["resolution"], strict=True)) == [
        (name, res) for name in ("linear_infsa", "sdpa", "softmax") for res in (224, 448)
    ]
    assert (tmp_path / "reports" / "smoke" / "report.html").is_file()
    jobs = sorted(sweep.glob("*/result.json"))
    kept = {p: json.loads(p.read_text())["timestamp"] for p in jobs[1:]}
    lost = json.loads(jobs[0].read_text())
    jobs[0].unlink()
    time.sleep(1.1)  # timestamps have one-second resolution
    again = _sweep(tmp_path, "doctor=false", "report=false")  # the resume is what is tested
    assert again.returncode == 0, again.stderr
    resumed = [line for line in again.stdout.splitlines() if line.startswith("resumed:")]
    measured = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert len(resumed) == 5 and len(measured) == 1
    assert f"{lost['attention']} small {lost['resolution']}px" in measured[0]
    assert jobs[0].is_file()  # the missing cell was measured again
    assert {p: json.loads(p.read_text())["timestamp"] for p in jobs[1:]} == kept


def test_cells_past_an_oom_are_skipped_without_running(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "attention=softmax",
            "resolution=1024,2048",
            "memory_limit_gb=0.1",
            f"hydra.sweep.dir={tmp_path}/sweep",
            "timing.window_s=0.1",
            "energy.idle_s=0",
            "doctor=false",
            "report=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = {
        r["resolution"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/result.json"))
    }
    assert rows[1024]["status"] == "oom"
    assert rows[2048]["status"] == "skipped_oom" and "1024" in rows[2048]["error"]
    assert rows[2048]["flops"] > rows[1024]["flops"] > 0


def test_report_cli_rejects_an_empty_dir(tmp_path):
    assert report.main([str(tmp_path)]) == 2


def test_report_cli_from_csv(tmp_path):
    csv = tmp_path / "gpu" / "results.csv"
    csv.parent.mkdir()
    ladder().to_csv(csv, index=False)
    assert report.main([str(csv), "--out", str(tmp_path / "out")]) == 0
    assert "Every cell (gpu)" in (tmp_path / "out" / "report.md").read_text()


def test_energy_flagged_invalid_is_not_shown_as_a_number():
    rows = cells(energy_valid=False)  # counted, but the counter's resolution was too coarse
    rate = figures.arithmetic_rate(rows, 1024)
    assert len(rate.axes) == 1  # no power panel from untrusted energy
    assert "flagged invalid" in rate._supxlabel.get_text()
    dash = figures.dashboard(rows, 1024)
    assert len(dash.axes) == 3


def test_report_cli_takes_a_single_cell_run_directory(tmp_path):
    from harness.data.rows import write_row

    write_row(tmp_path / "single" / "2026-11-28_linear_infsa_224", row("linear_infsa", 224))
    assert (
        report.main(
            [str(tmp_path / "single" / "2026-11-28_linear_infsa_224"), "--out", str(tmp_path / "r")]
        )
        == 0
    )
    assert report.main([str(tmp_path / "single"), "--out", str(tmp_path / "r2")]) == 0  # any depth
