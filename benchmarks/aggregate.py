"""How long attnbench-report takes on a large sweep: a synthetic sweep directory of N job dirs
(nine mechanisms x resolutions x modes x batches x dtypes), then results.csv and the report.

    python -m benchmarks.aggregate [--cells 1000]     (from the repository root)
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import attention_zoo as zoo
from harness.data.rows import write_results, write_row
from harness.reporting import report
from tests.fixtures import row


def synthetic_sweep(root: Path, cells: int) -> None:
    grid = itertools.product(
        zoo.available(),
        [224 * k for k in range(1, 12)],
        ("infer", "train"),
        (1, 2, 4, 8, 16, 32),
        ("bfloat16", "float32", "float16"),
    )
    for i, (name, res, mode, batch, dtype) in enumerate(itertools.islice(grid, cells)):
        status = "oom" if name == "softmax" and res > 2000 else "ok"
        write_row(
            root / f"job{i}",
            row(
                name,
                res,
                mode,
                status,
                throughput=1e5 / res,
                energy=res / 1e3,
                batch=batch,
                dtype=dtype,
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp, "sweep")
        synthetic_sweep(sweep, args.cells)
        start = time.perf_counter()
        _, rows = write_results(sweep)
        collected = time.perf_counter() - start
        report.render({"sweep": rows}, Path(tmp, "report"))
        total = time.perf_counter() - start
    print(
        f"{len(rows)} cells: results.csv from the job dirs in {collected:.2f} s, "
        f"with the rendered report {total:.2f} s"
    )


if __name__ == "__main__":
    main()
