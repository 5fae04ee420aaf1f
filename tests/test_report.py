"""The report from fixture rows, checked through its matplotlib objects and its files."""

import json
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
from fixtures import ladder, row

from harness import analysis, figures, report


def test_latency_figure_is_log_log_per_mode_with_oom_markers():
    fig = figures.latency(ladder())
    infer, train = fig.axes[:2]
    for ax in (infer, train):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "resolution" in ax.get_xlabel() and "latency" in ax.get_ylabel()
    assert infer.get_title() == "inference" and train.get_title() == "training step"
    oom = [line for line in infer.get_lines() if line.get_gid() == "oom:softmax"]
    assert len(oom) == 1 and list(oom[0].get_xdata()) == [2048]  # where softmax stopped
    assert "OOM" in [t.get_text() for t in infer.get_legend().get_texts()]
    softmax = [line for line in infer.get_lines() if line.get_label() == "softmax"][0]
    assert list(softmax.get_xdata()) == [224, 512, 1024]  # skipped cells are not points


def test_energy_panels_say_not_measured_never_zero():
    rows = ladder(energy=False)
    for fig in (figures.tiers(rows, 1024), figures.dashboard(rows, 1024)):
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert "energy not measured on NVIDIA H100 80GB HBM3" in texts
    energy_ax = figures.dashboard(rows, 1024).axes[3]
    assert not energy_ax.patches  # no bars at all, so no zero-height bars


def test_tiers_figure_colours_by_tier_and_stars_linear_infsa():
    fig = figures.tiers(ladder(), 1024)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "energy per image (J)" and ax.get_ylabel() == "throughput (img/s)"
    star = [c for c in ax.collections if c.get_gid() == "linear_infsa"][0]
    assert tuple(star.get_facecolor()[0][:3]) == (1.0, 0.0, 0.0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"O(N^2)", "O(N)", "Linear-InfSA"} <= set(legend)


def test_dashboard_speedups_are_throughput_ratios():
    fig = figures.dashboard(ladder(), 1024)
    over_softmax = fig.axes[0]
    widths = {
        t.get_text(): p.get_width()
        for t, p in zip(over_softmax.get_yticklabels(), over_softmax.patches, strict=False)
    }
    rows = ladder()
    ok = rows[(rows.resolution == 1024) & (rows["mode"] == "infer")].set_index("attention")
    expected = ok.loc["linear_infsa", "throughput_img_s"] / ok.loc["softmax", "throughput_img_s"]
    assert widths["linear_infsa"] == pytest.approx(expected)
    assert widths["softmax"] == pytest.approx(1.0)


def test_depth_figure_only_with_two_depths():
    rows = ladder()
    assert figures.depth(rows, 1024) is None
    deeper = rows.assign(model="paper_24l", depth=24, throughput_img_s=rows["throughput_img_s"] / 6)
    fig = figures.depth(__import__("pandas").concat([rows, deeper]), 1024)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["paper_4l (4L)", "paper_24l (24L)"]


def test_crossover_and_claims_tables():
    rows = ladder()
    cross = analysis.crossover(rows).set_index(["mode", "attention"])
    assert cross.loc[("infer", "linear_infsa"), "overtakes softmax at"] == "512²"
    assert cross.loc[("infer", "sdpa"), "overtakes softmax at"] == "224²"
    assert cross.loc[("infer", "linear_infsa"), "overtakes sdpa at"] == "512²"
    assert cross.loc[("train", "sdpa"), "overtakes softmax at"] == "224²"
    claims = analysis.claims(rows).set_index("claim (A100 40 GB)")
    measured = claims.loc["throughput, Linear InfViT (img/s)"]
    assert measured["measured"] == pytest.approx(900 / (1024 / 224) ** 2)
    assert measured["measured / paper"] == pytest.approx(measured["measured"] / 230.95)
    assert claims.loc["max inference resolution, softmax (px)", "measured"] == 1024
    assert claims.loc["max inference resolution, linear_infsa (px)", "measured"] == 4096


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
    assert "energy not measured" not in md.read_text()  # that text lives in the figures
    assert "skipped_oom" in md.read_text() and "RuntimeError: boom" in md.read_text()


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
    again = _sweep(tmp_path)
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


def test_row_fixture_matches_schema():
    assert set(row()) >= {"attention", "status", "energy_source"}


def test_energy_flagged_invalid_is_not_shown_as_a_number():
    rows = ladder().assign(energy_valid=False)  # counted, but over too short a window
    texts = [t.get_text() for ax in figures.power_and_tflops(rows, 1024).axes for t in ax.texts]
    assert any(t.startswith("energy not measured on") for t in texts)
    claims = analysis.claims(rows).set_index("claim (A100 40 GB)")
    assert pd.isna(claims.loc["energy, Linear InfViT (J/img)", "measured"])
    assert pd.isna(claims.loc["power = energy x throughput, Standard ViT (W)", "measured"])
