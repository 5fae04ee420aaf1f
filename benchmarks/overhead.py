"""What a cell costs beyond its own warm-up and timed window: the harness's overhead per cell.

Runs a sweep of tiny cells (softmax, small model, 32-64 px, one warm-up step, a fixed window, no
idle-power wait) and timestamps each progress line as it is printed. The gap between two lines
is one whole cell (Hydra's job, the measuring process, FLOP count, model set-up, warm-up,
window, row); minus the cell's window and warm-up steps, it is overhead. The first cell also
pays the sweep's start (imports, the fork server), reported apart.

    python -m benchmarks.overhead [--cells 12] [--window 0.5] [--checkout DIR]

--checkout runs another checkout's harness (e.g. a `git worktree` of an older commit) with this
environment's packages, to compare before and after on one machine in one session.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=12)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    sizes = ",".join(str(32 + 2 * i) for i in range(args.cells))  # distinct cells, same cost
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "harness",
            "attention=softmax",
            f"resolution={sizes}",
            "model.patch_size=2",
            f"timing.window_s={args.window}",
            "timing.warmup_iters=1",
            "timing.warmup_s=0",
            "energy.idle_s=0",
            f"hydra.sweep.dir={tmp}/sweep",
        ]
        start = time.perf_counter()
        stamps = []
        with subprocess.Popen(
            command, cwd=args.checkout, stdout=subprocess.PIPE, text=True, bufsize=1
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if re.match(r"\[\d+/", line):
                    stamps.append(time.perf_counter() - start)
        total = time.perf_counter() - start
        found = [json.loads(p.read_text()) for p in Path(tmp, "sweep").rglob("result.json")]
    own = [r["window_s"] + 2 * r["latency_ms"] / 1e3 for r in found if r["status"] == "ok"]
    if len(stamps) < 2 or len(own) != len(stamps):
        sys.exit(f"only {len(stamps)} progress lines and {len(own)} ok rows: see the sweep")
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    per_cell = [gap - statistics.median(own) for gap in gaps]
    print(
        f"{args.checkout}: {len(stamps)} cells, {args.window} s windows. Start to first row "
        f"{stamps[0]:.2f} s (incl. one cell); overhead per cell beyond warm-up and window: "
        f"median {statistics.median(per_cell):.2f} s (min {min(per_cell):.2f}, max "
        f"{max(per_cell):.2f}); after the last row (results, report) {total - stamps[-1]:.2f} s"
    )


if __name__ == "__main__":
    main()
