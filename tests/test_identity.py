"""One definition of a cell's identity (harness.rows), and every consumer agrees with it:
resume, OOM skipping, the check and the report's comparison."""

import json

import pandas as pd
import pytest
from fixtures import row

from harness import analysis, check, rows, sweep

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
