"""The sweep plan through Hydra's public override parser: any sweep syntax, trials round the
grid, the A/B side innermost; and a sweep always ends with its results.csv."""

import json

import pandas as pd
import pytest
from fixtures import FAST, MEASURE, attnbench
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.running.sweep import PlanError, expand


def plan(*overrides, trials=1, **order):
    return expand(OverridesParser.create().parse_overrides(list(overrides)), trials, **order)


def test_a_shuffled_order_is_seeded_keeps_the_sides_together_and_each_round_whole():
    grid = ("attention=softmax,sdpa,linear_infsa", "resolution=32,64,96", "revision=a,b")
    ordered = plan(*grid, trials=2)
    shuffled = plan(*grid, trials=2, order="shuffled", seed=3)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, ordered)) and shuffled != ordered
    assert shuffled == plan(*grid, trials=2, order="shuffled", seed=3)  # the seed decides
    assert shuffled != plan(*grid, trials=2, order="shuffled", seed=4)
    for first, second in zip(shuffled[::2], shuffled[1::2], strict=True):  # A/B back to back
        assert first[:2] == second[:2] and first[-1] == second[-1]
    assert [j[-1] for j in shuffled] == ["trial=0"] * 18 + ["trial=1"] * 18  # rounds stay whole
    with pytest.raises(PlanError, match="valid choices: grid, shuffled"):
        plan(*grid, order="random")


def test_product_of_choices_and_ranges_in_order():
    jobs = plan("attention=softmax,sdpa", "resolution=range(32,97,32)", "mode=infer")
    assert len(jobs) == 6
    assert jobs[0] == ["attention=softmax", "resolution=32", "mode=infer"]
    assert jobs[-1] == ["attention=sdpa", "resolution=96", "mode=infer"]


def test_trials_go_round_the_grid_and_revisions_alternate():
    jobs = plan("revision=a,b", "resolution=32,64", trials=2)
    assert [" ".join(j) for j in jobs] == [
        f"resolution={r} revision={v} trial={t}"
        for t in (0, 1)
        for r in (32, 64)
        for v in (("a", "b") if t == 0 else ("b", "a"))  # who goes first alternates
    ]


@pytest.mark.parametrize(
    "override,message",
    [
        ("resolution=interval(32,64)", "interval sweeps cannot be enumerated"),
        ("trial=0,1", "trial cannot be swept"),
    ],
)
def test_what_cannot_be_planned_is_refused(override, message):
    with pytest.raises(PlanError, match=message):
        plan(override)


def test_glob_and_choice_sweeps_count_right_and_end_in_results_and_report(tmp_path):
    done = attnbench(
        "attention=glob(s*)",
        "resolution=choice(32,48)",
        "model.depth=1",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *MEASURE,  # the doctor and the report as a sweep has them by default
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sweep" / "doctor.txt").is_file()
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in lines] == [f"[{k}/6]" for k in range(1, 7)]
    assert {line.split()[5] for line in lines} == {"sdpa", "softmax", "swin"}
    written = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert sorted(zip(written["attention"], written["resolution"], strict=False)) == [
        (name, res) for name in ("sdpa", "softmax", "swin") for res in (32, 48)
    ]
    assert (tmp_path / "reports" / "quick" / "report.html").is_file()
    plan_file = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert len(plan_file["jobs"]) == 6


def test_an_unwritable_plan_still_ends_in_results(tmp_path):
    (tmp_path / "sweep" / "sweep.json").mkdir(parents=True)  # the plan cannot be written
    done = attnbench(
        "attention=softmax",
        "resolution=32",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *FAST,  # doctor=false report=false too
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "could not write the sweep plan" in done.stderr
    assert "[1/?]" in done.stdout
    written = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert list(zip(written["attention"], written["status"], strict=False)) == [("softmax", "ok")]
    # without its doctor and report, the sweep says how to render the report later
    assert not (tmp_path / "sweep" / "doctor.txt").exists() and not (tmp_path / "reports").exists()
    assert f"report: not rendered (report=false); attnbench-report {tmp_path}/sweep" in done.stdout


def test_an_interval_sweep_exits_2_before_measuring(tmp_path):
    done = attnbench("resolution=interval(32,64)", f"hydra.sweep.dir={tmp_path}/s", cwd=tmp_path)
    assert done.returncode == 2
    assert "interval sweeps cannot be enumerated" in done.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_the_eta_weighs_each_cell_by_its_expected_cost(tmp_path, monkeypatch):
    from fixtures import config

    from harness.data.store import RunStore
    from harness.running import app

    cfg = config("attention=softmax", "resolution=224")
    soft = ["attention=softmax", "resolution=224"]
    assert app.cost(["attention=softmax", "resolution=448"], cfg) == 16 * app.cost(soft, cfg)
    lin = ["attention=linear_infsa", "resolution=224"]
    assert app.cost(["attention=linear_infsa", "resolution=448"], cfg) == 4 * app.cost(lin, cfg)
    assert app.cost([*soft, "mode=train"], cfg) == 3 * app.cost(soft, cfg)
    # two cells done in 60 s, the one left costs 16 of them: 16 x 30 s, not 30 s
    jobs = [soft, soft, ["attention=softmax", "resolution=448"]]
    RunStore(tmp_path).write_plan({"jobs": jobs, "started": 1000.0})
    monkeypatch.setattr(app.time, "time", lambda: 1060.0)
    assert app.progress(tmp_path, 1, cfg) == "[2/3] 1:00 elapsed, ~8:00 left"
