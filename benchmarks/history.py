"""Does the history find a change at the commit that made it, and only there? And how long do
`attnbench-history check` and `report` take as the store grows?

It builds a synthetic store of R runs of the six smoke cells on one machine (each run's value
per cell lognormal around the cell's level with the between-run spread this machine shows,
--noise, and a 95% interval from 12 trials), with three injected changes: linear_infsa 224²
5% slower from run 0.4 R, sdpa 448² 10% slower from run 0.7 R, and softmax 224² drifting 0.1%
slower per run throughout. The other three cells stay flat. It then runs `attnbench-history
check` and counts, in the latency series: injected steps found at the right commit (within one
run), change points anywhere else (false), and what the drifting series gave. Then it times
`check` and `report` (cold: no cache; warm: the cache built by the first read) at R runs and
at --big runs (same recipe), and one `add` of a real run.

    python -m benchmarks.history [--runs 200] [--big 5000] [--noise 0.015] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data import history

CELLS = (  # (mechanism, resolution, latency in ms): the smoke cells' levels here
    ("softmax", 224, 4.5),
    ("softmax", 448, 23.0),
    ("sdpa", 224, 4.3),
    ("sdpa", 448, 20.5),
    ("linear_infsa", 224, 3.9),
    ("linear_infsa", 448, 12.5),
)
STEP5, STEP10, DRIFT = ("linear_infsa", 224), ("sdpa", 448), ("softmax", 224)
TRIALS = 12


def build(store: Path, runs: int, noise: float, seed: int) -> dict[str, int]:
    """The synthetic store; returns where the steps are (run index)."""
    rng = np.random.default_rng(seed)
    at5, at10 = int(0.4 * runs), int(0.7 * runs)
    for i in range(runs):
        commit = f"{i:06d}" + "0" * 6
        when = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=i)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = []
        for name, res, ms in CELLS:
            level = ms * np.exp(rng.normal(0, noise))
            if (name, res) == STEP5 and i >= at5:
                level *= 1.05
            if (name, res) == STEP10 and i >= at10:
                level *= 1.10
            if (name, res) == DRIFT:
                level *= 1.001**i
            trials = level * np.exp(rng.normal(0, 0.02, TRIALS))
            lat, lat_lo, lat_hi = history._interval(list(trials))
            thr = 1000 / trials
            t, t_lo, t_hi = history._interval(list(thr))
            lines.append(
                {
                    "run": f"{stamp.replace(':', '')}-{commit[:12]}-bench-{i:08x}",
                    "commit": commit,
                    "time": stamp,
                    "machine": "vm (Intel(R) Xeon(R) Processor)",
                    "settings": "sweep=ab",
                    "attention": name,
                    "attention_options": "{}",
                    "model": "small",
                    "depth": 4,
                    "dim": 192,
                    "heads": 3,
                    "patch_size": 16,
                    "mlp_ratio": 4.0,
                    "resolution": res,
                    "height": res,
                    "batch_size": 1,
                    "mode": "infer",
                    "dtype": "float32",
                    "device": "cpu",
                    "compile": False,
                    "tf32": False,
                    "threads": 2,
                    "trials": TRIALS,
                    "trusted": True,
                    "latency_ms": lat,
                    "latency_ms_lo": lat_lo,
                    "latency_ms_hi": lat_hi,
                    "latency_ms_trials": json.dumps([round(v, 6) for v in trials]),
                    "throughput_img_s": t,
                    "throughput_img_s_lo": t_lo,
                    "throughput_img_s_hi": t_hi,
                    "throughput_img_s_trials": json.dumps([round(v, 6) for v in thr]),
                }
            )
        history.add(store, pd.DataFrame(lines))
    return {"5%": at5, "10%": at10}


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "harness.reporting.history", *args], capture_output=True, text=True
    )
    return time.perf_counter() - start, done


def score(out: str, steps: dict[str, int]) -> dict[str, object]:
    """Latency change points from check's table: right (within one run of an injected step of
    that cell), false (anywhere else but the drifting cell), and the drift's."""
    found = {"5%": False, "10%": False, "false": 0, "drift": []}
    for line in out.splitlines():
        parts = line.split()
        if "latency_ms" not in parts or line.startswith("attnbench-history"):
            continue
        name, res = parts[0], int(parts[2].removesuffix("px"))
        run = int(re.search(r"Z\s+(\d+)\s", line).group(1))  # type: ignore[union-attr]
        if (name, res) == DRIFT:
            found["drift"].append(run)  # type: ignore[union-attr]
        elif (name, res) == STEP5 and abs(run - steps["5%"]) <= 1:
            found["5%"] = True
        elif (name, res) == STEP10 and abs(run - steps["10%"]) <= 1:
            found["10%"] = True
        else:
            found["false"] += 1  # type: ignore[operator]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--big", type=int, default=5000)
    parser.add_argument("--noise", type=float, default=0.015)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        totals = {"5%": 0, "10%": 0, "false": 0}
        for seed in range(args.seeds):
            store = Path(tmp, f"s{seed}")
            steps = build(store, args.runs, args.noise, seed)
            _, done = cli("check", "--store", str(store))
            found = score(done.stdout, steps)
            for key in totals:
                totals[key] += int(found[key])  # type: ignore[call-overload]
            print(
                f"seed {seed}: exit {done.returncode}; 5% step at run {steps['5%']} found: "
                f"{found['5%']}; 10% at {steps['10%']}: {found['10%']}; false: {found['false']}; "
                f"drift's change points at runs {found['drift']}"
            )
            if seed:
                shutil.rmtree(store)
        print(
            f"\n{args.seeds} stores of {args.runs} runs, between-run noise {args.noise:.1%}: "
            f"5% steps found at their commit {totals['5%']}/{args.seeds}, 10% steps "
            f"{totals['10%']}/{args.seeds}, false change points {totals['false']} "
            f"(over {args.seeds * 4} flat-or-stepped latency series)"
        )
        for runs, store in ((args.runs, Path(tmp, "s0")), (args.big, Path(tmp, "big"))):
            if not store.exists():
                start = time.perf_counter()
                build(store, runs, args.noise, 0)
                print(f"built {runs} runs in {time.perf_counter() - start:.0f} s")
            (store / history.CACHE).unlink(missing_ok=True)
            start = time.perf_counter()
            history.load(store)  # cold: every file read, the cache written
            read_cold = time.perf_counter() - start
            start = time.perf_counter()
            cells = history.load(store).cells
            read_warm = time.perf_counter() - start
            start = time.perf_counter()
            middle = sorted(cells["time"])[len(cells) // 2]
            one = cells[(cells["attention"] == "sdpa") & (cells["time"] >= middle)]
            query = time.perf_counter() - start
            print(
                f"{runs} runs ({len(cells)} cells): read {read_cold:.2f} s cold, "
                f"{read_warm:.2f} s from the cache; a query by cell and time {query * 1e3:.1f} ms "
                f"({len(one)} lines)"
            )
            (store / history.CACHE).unlink(missing_ok=True)
            cold, _ = cli("check", "--store", str(store))
            warm = [cli("check", "--store", str(store))[0] for _ in range(3)]
            page = [
                cli("report", "--store", str(store), "--out", str(store / "page"))[0]
                for _ in range(2)
            ]
            size = (store / "page" / "history.html").stat().st_size / 2**20
            print(
                f"{runs} runs: attnbench-history check {cold:.2f} s cold (no cache), "
                f"{statistics.median(warm):.2f} s warm; report {statistics.median(page):.2f} s "
                f"({size:.1f} MiB page); wall of the command, Python's start included"
            )


if __name__ == "__main__":
    main()
