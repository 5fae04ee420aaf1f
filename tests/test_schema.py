"""One typed definition per column: the CSV reader gives back what went in, and the check and
the aggregation take their columns from the definition."""

import math

from fixtures import row

from harness.data import rows
from harness.reporting import analysis, check


def test_a_results_csv_reads_back_with_the_types_that_went_in(tmp_path):
    written = [
        row("softmax", 224, timing_valid=True, threads=2),
        row("sdpa", 448, status="oom", timing_valid=None, threads=2),
        row("linear_infsa", 896, timing_valid=False, threads=1, compile=True),
    ]
    for i, r in enumerate(written):
        rows.write_row(tmp_path / str(i), r)
    path, _ = rows.write_results(tmp_path)
    table = rows.collect(path).set_index("attention")
    assert table.loc["softmax", "timing_valid"] is True
    assert table.loc["linear_infsa", "timing_valid"] is False
    assert table.loc["sdpa", "timing_valid"] is None  # empty stays missing, not "nan" or False
    assert table.loc["linear_infsa", "compile"] is True and table.loc["softmax", "compile"] is False
    assert int(table.loc["linear_infsa", "threads"]) == 1 and table["threads"].dtype == "Int64"
    assert table.loc["softmax", "throughput_img_s"] == written[0]["throughput_img_s"]
    assert math.isnan(table.loc["sdpa", "throughput_img_s"])
    assert table.loc["softmax", "error"] is None or table.loc["softmax", "error"] != "nan"


def test_the_check_and_the_aggregation_take_their_columns_from_the_definition():
    assert set(rows.IDENTITY) <= {c.name for c in rows.COLUMNS.values() if c.group == "identity"}
    assert check.EXACT == ["status", "params", "macs", "flops"]
    assert set(check.METRICS) == {
        "throughput_img_s",
        "latency_ms",
        "energy_j_per_img",
        "peak_mem_bytes",
    }
    assert check.METRICS["throughput_img_s"].higher_is_better
    assert set(rows.MEDIANS) >= set(check.METRICS)  # what is gated is aggregated as a median
    assert "timestamp" not in analysis.PROVENANCE and "device_name" in analysis.PROVENANCE
