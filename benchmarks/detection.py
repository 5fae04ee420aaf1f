"""How well does the same-run A/B check find a slowdown on this machine, and how often does it
cry wolf? Measured, not assumed.

It makes throwaway commits on top of HEAD (in a temporary git worktree; no branch is moved): one
per slowdown that slows one mechanism by real extra work (a GEMM per block, sized by timing it
here to add that fraction to the mechanism's model step), and one that changes nothing the
measurement can see (a comment). Each run is one sweep of all of them beside HEAD,
    attnbench sweep=ab revision=<slow 10%>,<no-op>,HEAD,<slow 5%>
and the check CI runs (attnbench-check --ab --config runs/baselines/cpu-smoke/ab.yaml) on each
pair HEAD -> other, from that one sweep: an A/A (HEAD -> no-op) and an A/B per slowdown. Four
sides in one sweep cost less than three sweeps and measure each pair within the same trials;
a pair's two cells run up to two cells apart instead of back to back (HEAD sits beside the
no-op and the 5% side), which only makes the noise here worse than in CI's two-sided sweep.

It prints every run's verdicts and then the rates: an A/B detected (exit 1 naming only the slowed
mechanism's cells), passed as ok (exit 0), inconclusive (3); an A/A ok, false alarm (1),
inconclusive; and the wall time per sweep. --burn runs a CPU-burning process beside every run.
A slowdown written FRACTION:N is measured in the first N runs only (the A/A in all of them), so
rates over 20 runs for one and 10 for another cost one sweep per run, not per rate.

    python -m benchmarks.detection [--slowdowns 0.10:20,0.05:10] [--runs 20] [--trials N] [--burn]
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

import torch

import attention_zoo as zoo
from harness.data import rows as schema

REPO = Path(__file__).resolve().parent.parent
VICTIM = "linear_infsa"
MARK = "# benchmarks.detection:"


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def step_ms(model: torch.nn.Module, images: torch.Tensor, repeats: int = 60) -> float:
    with torch.inference_mode():
        for _ in range(5):
            model(images)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def burn_width(fraction: float) -> int:
    """Columns of the extra (tokens x dim) @ (dim x width) GEMM per block that make the small
    model's step at 224² `fraction` slower: timed here with and without it, interleaved in
    rounds (so a noisy second falls on both), and adjusted."""
    torch.manual_seed(0)
    images = torch.randn(1, 3, 224, 224)
    model = zoo.ViT.from_preset("small", VICTIM).eval()
    attn: torch.nn.Module = model.blocks[0].attn  # type: ignore[assignment]
    cls = type(attn)
    plain = cls.forward
    width = 256
    for _ in range(4):

        def slowed(self, x, hw, width=width):  # the same work the throwaway commit adds
            _ = x @ torch.ones(x.shape[-1], width, dtype=x.dtype, device=x.device)
            return plain(self, x, hw)

        ratios = []
        for _ in range(6):
            base = step_ms(model, images, 40)
            cls.forward = slowed
            try:
                ratios.append(step_ms(model, images, 40) / base)
            finally:
                cls.forward = plain
        achieved = statistics.median(ratios) - 1
        width = max(1, round(width * fraction / max(achieved, 1e-3)))
    return width


def throwaway_commits(work: Path, fractions: list[float]) -> tuple[dict[str, str], str]:
    """({label: slow commit}, no-op commit) on top of HEAD, in the worktree `work`."""
    head = git("rev-parse", "HEAD")
    source = work / "attention_zoo" / f"{VICTIM}.py"
    original = source.read_text()
    who = ["-c", "user.name=attnbench", "-c", "user.email=attnbench@localhost"]
    slow = {}
    for fraction in fractions:
        width = burn_width(fraction)
        slowed = original.replace(
            "    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:\n",
            "    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:\n"
            f"        {MARK} real extra work, {fraction:.0%} of the model step\n"
            f"        _ = x @ torch.ones(x.shape[-1], {width}, dtype=x.dtype, device=x.device)\n",
        )
        assert slowed != original, f"{VICTIM}.forward not found"
        git("checkout", "-q", head, cwd=work)
        source.write_text(slowed)
        git(*who, "commit", "-qam", f"throwaway: {VICTIM} {fraction:.0%} slower", cwd=work)
        label = f"{fraction:.0%} slower"
        slow[label] = git("rev-parse", "HEAD", cwd=work)
        print(f"{label}: {slow[label][:12]} (+{width}-column GEMM per block)")
    git("checkout", "-q", head, cwd=work)
    source.write_text(original + f"\n{MARK} a comment, nothing measurable\n")
    git(*who, "commit", "-qam", "throwaway: no-op", cwd=work)
    return slow, git("rev-parse", "HEAD", cwd=work)


def sweep(sides: list[str], scratch: Path, trials: int | None) -> tuple[Path, float]:
    """One sweep of all sides (sweep=ab's trials unless given); its directory and wall time."""
    out = scratch / f"run{time.monotonic_ns()}"
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "sweep=ab",
            f"revision={','.join(sides)}",
            f"revision_repo={REPO}",
            *([f"trials={trials}"] if trials else []),
            f"hydra.sweep.dir={out}",
        ],
        cwd=scratch,
        check=True,
        capture_output=True,
    )
    return out, time.perf_counter() - start


def check_pair(run: Path, base: str, other: str) -> tuple[int, str]:
    """CI's check of base -> other, on that pair's rows of the sweep: exit code, verdict."""
    pair = run.with_name(f"{run.name}-{other[:12]}")
    pair.mkdir()
    rows = schema.collect(run)
    keep = rows["revision"].isin([base[:12], other[:12]])
    rows[keep].to_csv(pair / schema.RESULTS, index=False)
    plan = json.loads((run / "sweep.json").read_text())
    plan["revisions"] = [r for s in (base, other) for r in plan["revisions"] if r["sha"] == s[:12]]
    (pair / "sweep.json").write_text(json.dumps(plan))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.reporting.check",
            "--ab",
            str(pair),
            "--config",
            str(CONFIG),
        ],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(pair, ignore_errors=True)
    ratios = [
        float(line.split()[line.split().index("latency_ms") + 3])
        for line in done.stdout.splitlines()
        if line.lstrip().startswith(VICTIM) and " latency_ms " in line
    ]
    achieved = f"{VICTIM} latency ratios {', '.join(f'{r:.3f}' for r in ratios)}; "
    return done.returncode, achieved + (done.stdout.strip().splitlines() or [done.stderr])[-1]


CONFIG = REPO / "runs" / "baselines" / "cpu-smoke" / "ab.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--slowdowns", default="0.10,0.05", help="FRACTION[:RUNS],...: RUNS of --runs by default"
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--burn", action="store_true", help="a CPU-burning process beside")
    parser.add_argument("--trials", type=int, help="paired trials per sweep (default: sweep=ab's)")
    args = parser.parse_args()
    wanted = [s.partition(":") for s in args.slowdowns.split(",")]
    fractions = [float(f) for f, _, _ in wanted]
    runs_of = [int(n) if n else args.runs for _, _, n in wanted]
    head = git("rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp, "work")
        git("worktree", "add", "-q", "--detach", str(work), head)
        try:
            slow, noop = throwaway_commits(work, fractions)
        finally:
            git("worktree", "remove", "--force", str(work))
        labels = list(slow)
        runs = dict(zip(labels, runs_of, strict=True))
        print(
            f"no-op {noop[:12]}; runs: A/A {args.runs}, "
            + ", ".join(f"{k} {runs[k]}" for k in labels)
        )
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.burn else None
        results: dict[str, list[tuple[int, str]]] = {k: [] for k in ["A/A", *labels]}
        walls: dict[int, list[float]] = {}
        try:
            for r in range(args.runs):
                now = [k for k in labels if r < runs[k]]
                sides = [*(slow[k] for k in now[:1]), noop, head, *(slow[k] for k in now[1:])]
                print(f"run {r + 1}: sides in each trial {', '.join(s[:12] for s in sides)}")
                run, wall = sweep(sides, Path(tmp), args.trials)
                walls.setdefault(len(sides), []).append(wall)
                for kind, other in (("A/A", noop), *((k, slow[k]) for k in now)):
                    code, line = check_pair(run, head, other)
                    results[kind].append((code, line))
                    shown = line[:300] if code == 0 else line  # name every cell not ok
                    print(f"run {r + 1} {kind}: exit {code}: {shown}")
                print(f"run {r + 1}: sweep of {len(sides)} sides in {wall:.0f} s")
                sys.stdout.flush()
                shutil.rmtree(run, ignore_errors=True)
        finally:
            if burner is not None:
                burner.kill()
    summarise(results, walls, args)


def summarise(
    results: dict[str, list[tuple[int, str]]],
    walls: dict[int, list[float]],
    args: argparse.Namespace,
) -> None:
    def verdict(line: str) -> str:
        return line.split("attnbench-check: ", 1)[-1]

    def count(kind: str, code: int) -> int:
        return sum(c == code for c, _ in results[kind])

    trials = f"trials={args.trials}" if args.trials else "sweep=ab's trials"
    print(
        f"\n{trials}, tolerances {CONFIG.relative_to(REPO)}"
        f"{', CPU burner beside' if args.burn else ''}:"
    )
    aa = f"A/A, {len(results['A/A'])} runs: ok {count('A/A', 0)}, false alarm {count('A/A', 1)}"
    print(aa + f", inconclusive {count('A/A', 3)}, unusable {count('A/A', 2)}")
    for kind in [k for k in results if k != "A/A"]:
        named_only = sum(
            code == 1
            and VICTIM in verdict(line)
            and not re.search(r"(softmax|sdpa) small", verdict(line))
            for code, line in results[kind]
        )
        print(
            f"{VICTIM} {kind}, {len(results[kind])} runs: failed {count(kind, 1)} ({named_only} "
            f"naming only {VICTIM}), passed as ok {count(kind, 0)}, inconclusive {count(kind, 3)}"
        )
    for sides, times in sorted(walls.items()):
        print(
            f"wall per sweep of {sides} sides ({len(times)} sweeps): median "
            f"{statistics.median(times):.0f} s, max {max(times):.0f} s"
        )


if __name__ == "__main__":
    main()
