"""One definition of a cell's identity (harness.data.rows), and every consumer agrees with it:
resume, OOM skipping, the check and the report's comparison."""

import json
from pathlib import Path

import pandas as pd
import pytest
from fixtures import row

from harness.data import rows
from harness.reporting import analysis, check
from harness.running import sweep

# Each change makes another cell: never resumed as, skipped for, or compared with the original.
VARIANTS = {
    "compile": {"compile": True},
    "tf32": {"tf32": True},
    "options": {"attention_options": '{"window_size": 14}'},
    "height": {"height": 448, "tokens": 392},
    "threads": {"threads": 1},
    "patch": {"patch_size": 8},
}


def base(**extra):
    values = row("swin", 224, attention_options='{"window_size": 7}', device="cpu")
    return values | extra


@pytest.mark.parametrize("change", VARIANTS.values(), ids=VARIANTS.keys())
def test_each_setting_is_its_own_cell(change):
    assert rows.identity(base()) != rows.identity(base(**change))


def test_the_same_cell_from_json_csv_and_a_config_has_one_identity(tmp_path):
    original = base(attention_options={"window_size": 7}, device="cuda:1")
    rows.write_row(tmp_path / "job", original)
    from_json = rows.read_row(tmp_path / "job" / rows.ROW_FILE)
    _, table = rows.write_results(tmp_path)
    from_csv = pd.read_csv(tmp_path / rows.RESULTS).iloc[0]
    on_other_gpu = dict(original, device="cuda:0")
    keys = {rows.identity(r) for r in (original, from_json, from_csv, on_other_gpu)}
    assert len(keys) == 1


@pytest.mark.parametrize("change", VARIANTS.values(), ids=VARIANTS.keys())
def test_resume_and_oom_skipping_keep_cells_apart(change):
    cell = base(**change)
    assert sweep.previous(base(), [base()]) is not None
    assert sweep.previous(cell, [base()]) is None
    smaller_oom = base(status="oom", resolution=112, height=112, tokens=49)
    assert sweep.smaller_oom(base(), [smaller_oom]) is smaller_oom
    skipped = sweep.smaller_oom(cell, [smaller_oom])
    # height is a size: a taller image of a cell that ran out of memory is skipped too
    assert (skipped is smaller_oom) if "height" in change else (skipped is None)


def test_resume_keeps_each_trial_and_revision():
    done = base(trial=0, revision="")
    assert sweep.previous(base(trial=1), [done]) is None
    assert sweep.previous(base(revision="abc"), [done]) is None
    assert sweep.previous(base(trial=0), [done]) is done


@pytest.mark.parametrize("change", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_check_never_compares_different_cells(tmp_path, capsys, change):
    baseline, current = tmp_path / "base.csv", tmp_path / "cur.csv"
    pd.DataFrame([base()]).to_csv(baseline, index=False)
    pd.DataFrame([base(**change)]).to_csv(current, index=False)
    code = check.main(["--baseline", str(baseline), "--current", str(current)])
    said = capsys.readouterr().err
    assert code == 2 and "no cell" in said
    column = next(iter(change))
    assert f"baseline {column}=" in said and f"current {column}=" in said  # which field differs


def test_the_comparison_table_joins_cell_by_cell():
    first = pd.DataFrame(
        [
            base(throughput_img_s=10.0),
            base(throughput_img_s=20.0, attention_options='{"window_size": 14}'),
        ]
    )
    second = first.assign(throughput_img_s=first["throughput_img_s"] * 2)
    table = analysis.comparison({"a": first, "b": second})
    assert len(table) == 2  # window 7 with window 7, 14 with 14: not four pairings
    assert sorted(table["img/s a"]) == [10.0, 20.0]
    assert list(table["b / a"]) == [2.0, 2.0]
    assert {json.loads(o)["window_size"] for o in table["attention_options"]} == {7, 14}


def test_the_comparison_joins_a_cell_measured_with_other_threads_and_names_them():
    two = pd.DataFrame([base(throughput_img_s=10.0, threads=2)])
    one = pd.DataFrame([base(throughput_img_s=6.0, threads=1)])
    table = analysis.comparison({"a": two, "b": one})
    assert len(table) == 1  # one line, not two identical-looking ones
    assert table["b / a"].iloc[0] == 0.6
    assert table["measured with"].iloc[0] == "threads=2 (a) vs threads=1 (b)"
    same = analysis.comparison({"a": two, "b": two})
    assert same["measured with"].iloc[0] == ""
    both = analysis.comparison({"a": pd.concat([two, one]), "b": two})  # one run, two settings
    assert list(both.filter(like="img/s").columns) == [
        "img/s a threads=1",
        "img/s a threads=2",
        "img/s b",
    ]


def test_the_exact_check_travels_across_thread_counts_and_timed_metrics_say_why_not(
    tmp_path, capsys
):
    baseline = Path(__file__).resolve().parent.parent / "runs/baselines/cpu-smoke/results.csv"
    rows_ = pd.read_csv(baseline)
    assert set(rows_["threads"]) == {2}
    current = tmp_path / "four.csv"
    rows_.assign(threads=4).to_csv(current, index=False)
    argv = ["--baseline", str(baseline), "--current", str(current)]
    assert check.main([*argv, "--exact-only"]) == check.EXIT_OK
    assert "cells matched without threads" in capsys.readouterr().out
    assert check.main(argv) == check.EXIT_UNUSABLE
    said = capsys.readouterr().err
    assert "baseline threads=2, current threads=4" in said
    assert "re-measure the baseline on this runner or set threads=2" in said
    mixed = tmp_path / "mixed.csv"  # some cells alike, some not: the rest say why in a note
    pd.concat(
        [rows_[rows_["attention"] == "sdpa"], rows_[rows_["attention"] != "sdpa"].assign(threads=4)]
    ).to_csv(mixed, index=False)
    code = check.main(["--baseline", str(baseline), "--current", str(mixed)])
    out = capsys.readouterr().out
    assert code != check.EXIT_UNUSABLE
    assert (
        "note: 4 cells compared on exact metrics only: baseline threads=2, current threads=4" in out
    )


def test_one_status_type_decides_resume_skips_and_ranks():
    done = {s: base(status=s, tokens=196) for s in rows.STATUSES}
    bigger = base(resolution=448, height=448, tokens=784)
    kept = {s for s, r in done.items() if sweep.previous(base(), [r]) is r}
    assert kept == {"ok", "skipped_oom", "kernel_limit", "oom"}  # `error` is measured again
    stops = {s for s, r in done.items() if sweep.smaller_oom(bigger, [r]) is r}
    assert stops == {"oom", "kernel_limit"}  # a size limit binds larger sizes too
    assert max(rows.STATUSES, key=lambda s: rows.status(s).rank) == "error"
    assert rows.status("something else") is rows.STATUSES["error"]


def test_skip_decisions_read_the_cells_index_and_the_row_stays_the_truth(tmp_path):
    from harness.data.store import INDEX, RunStore

    store = RunStore(tmp_path)
    small, other = base(status="oom", tokens=196), base(attention="sdpa", tokens=196)
    kept = store.record(tmp_path / "a", small)
    store.record(tmp_path / "b", other)
    bigger = base(resolution=448, height=448, tokens=784)
    (entry,) = store.entries(bigger)  # its own cell's entries only, at every size
    assert entry["attention"] == "swin" and sweep.smaller_oom(bigger, [entry]) is entry
    assert len(list((tmp_path / INDEX).iterdir())) == 2  # one directory per cell
    kept.unlink()  # a deleted row is measured again, whatever the index says
    assert store.entries(bigger) == []


def test_a_measurement_made_again_elsewhere_supersedes_its_earlier_row(tmp_path):
    from harness.data.store import SUPERSEDED, RunStore

    store = RunStore(tmp_path)
    failed = base(status="error", error="stopped: the job got SIGTERM", tokens=196)
    store.record(tmp_path / "window_s=6", failed)
    store.record(tmp_path / "window_s=1", base(tokens=196))  # resumed with another setting
    assert [r["status"] for r in rows.read_rows(tmp_path)] == ["ok"]  # one row per sample
    assert (tmp_path / "window_s=6" / SUPERSEDED).is_file()  # kept, not lost
    store.record(tmp_path / "window_s=1", base(tokens=196))  # the same directory: rewritten
    assert len(rows.read_rows(tmp_path)) == 1


def test_options_at_their_defaults_are_not_part_of_the_identity():
    """sdpa gained `backend` (default auto): its rows from before, with no options, are still
    the same cell; a pinned backend is another."""
    from fixtures import config

    from harness.measuring import cell

    plain = cell.fields(config("attention=sdpa"))
    assert plain["attention_options"] == {}
    assert rows.identity(plain) == rows.identity(plain | {"attention_options": "{}"})
    pinned = cell.fields(config("attention=sdpa", "attention.backend=math"))
    assert pinned["attention_options"] == {"backend": "math"}
    assert rows.identity(pinned) != rows.identity(plain)
