"""How well does a same-run A/B check find a slowdown on this machine, and how often does it cry
wolf? Measured, not assumed.

It makes two throwaway commits on top of HEAD (in a temporary git worktree; no branch is moved):
one that slows one mechanism by real extra work (a GEMM per block, sized by timing it here to
add the wanted fraction to that mechanism's model step), and one that changes nothing the
measurement can see (a comment). Then, R times each, it runs
    attnbench sweep=ab revision=HEAD,<slow> trials=T    -> attnbench-check --ab  (A/B)
    attnbench sweep=ab revision=HEAD,<no-op> trials=T   -> attnbench-check --ab  (A/A)
and prints the detection rate (exit 1 naming only the slowed mechanism), the false-alarm rate
(exit 1 in A/A), the inconclusive counts and the wall time per run. --burn runs a CPU-burning
process beside every run (a shared machine at its worst).

    python -m benchmarks.detection [--slowdown 0.10] [--runs 10] [--trials 10] [--burn]
"""

from __future__ import annotations

import argparse
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
    model's step at 224² `fraction` slower: timed here, with and without it, and adjusted."""
    torch.manual_seed(0)
    images = torch.randn(1, 3, 224, 224)
    model = zoo.ViT.from_preset("small", VICTIM).eval()
    cls = type(model.blocks[0].attn)
    plain = cls.forward
    base = step_ms(model, images)
    width = 256
    for _ in range(3):

        def slowed(self, x, hw, width=width):  # the same work the throwaway commit adds
            _ = x @ torch.ones(x.shape[-1], width, dtype=x.dtype, device=x.device)
            return plain(self, x, hw)

        cls.forward = slowed
        try:
            achieved = step_ms(model, images) / base - 1
        finally:
            cls.forward = plain
        width = max(1, round(width * fraction / max(achieved, 1e-3)))
    return width


def throwaway_commits(work: Path, fraction: float) -> tuple[str, str, int]:
    """(slow commit, no-op commit, burn width) on top of HEAD, in the worktree `work`."""
    head = git("rev-parse", "HEAD")
    source = work / "attention_zoo" / f"{VICTIM}.py"
    original = source.read_text()
    width = burn_width(fraction)
    slowed = original.replace(
        "    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:\n",
        "    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:\n"
        f"        {MARK} real extra work, {fraction:.0%} of the model step\n"
        f"        _ = x @ torch.ones(x.shape[-1], {width}, dtype=x.dtype, device=x.device)\n",
    )
    assert slowed != original, f"{VICTIM}.forward not found"
    who = ["-c", "user.name=attnbench", "-c", "user.email=attnbench@localhost"]
    source.write_text(slowed)
    git(*who, "commit", "-qam", f"throwaway: {VICTIM} {fraction:.0%} slower", cwd=work)
    slow = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", head, cwd=work)
    source.write_text(original + f"\n{MARK} a comment, nothing measurable\n")
    git(*who, "commit", "-qam", "throwaway: no-op", cwd=work)
    noop = git("rev-parse", "HEAD", cwd=work)
    return slow, noop, width


def ab(base: str, other: str, trials: int, scratch: Path) -> tuple[int, str, float]:
    """One same-run A/B: the check's exit code, its verdict line, and the sweep's wall time."""
    sweep = scratch / f"run{time.monotonic_ns()}"
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "sweep=ab",
            f"revision={base},{other}",
            f"trials={trials}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=scratch,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    done = subprocess.run(
        [sys.executable, "-m", "harness.reporting.check", "--ab", str(sweep), *TOLERANCE],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(sweep, ignore_errors=True)
    ratios = [
        float(line.split()[line.split().index("latency_ms") + 3])
        for line in done.stdout.splitlines()
        if line.lstrip().startswith(VICTIM) and " latency_ms " in line
    ]
    achieved = f"{VICTIM} latency ratios {', '.join(f'{r:.3f}' for r in ratios)}; "
    return done.returncode, achieved + done.stdout.strip().splitlines()[-1], wall


TOLERANCE = ["--tolerance", "throughput_img_s=0.05", "--tolerance", "latency_ms=0.05"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slowdown", type=float, default=0.10)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--burn", action="store_true", help="a CPU-burning process beside")
    args = parser.parse_args()
    head = git("rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp, "work")
        git("worktree", "add", "-q", "--detach", str(work), head)
        try:
            slow, noop, width = throwaway_commits(work, args.slowdown)
        finally:
            git("worktree", "remove", "--force", str(work))
        print(f"slow commit {slow[:12]} (+{width}-column GEMM per block), no-op {noop[:12]}")
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.burn else None
        results: dict[str, list[tuple[int, str, float]]] = {"A/B": [], "A/A": []}
        try:
            for r in range(args.runs):
                for kind, other in (("A/B", slow), ("A/A", noop)):
                    code, line, wall = ab(head, other, args.trials, Path(tmp))
                    results[kind].append((code, line, wall))
                    shown = line if code == 1 else line[:300]  # name every cell called regressed
                    print(f"{kind} run {r + 1}: exit {code} in {wall:.0f} s: {shown}")
                    sys.stdout.flush()
        finally:
            if burner is not None:
                burner.kill()
    summarise(results, args)


def summarise(results: dict[str, list[tuple[int, str, float]]], args: argparse.Namespace) -> None:
    def verdict(line: str) -> str:
        return line.split("attnbench-check: ", 1)[-1]

    detected = sum(
        code == 1
        and VICTIM in verdict(line)
        and not re.search(r"(softmax|sdpa) small", verdict(line))
        for code, line, _ in results["A/B"]
    )
    passed = sum(code == 0 for code, _, _ in results["A/B"])
    alarms = sum(code == 1 for code, _, _ in results["A/A"])
    unsure = {k: sum(code == 3 for code, _, _ in v) for k, v in results.items()}
    walls = [wall for v in results.values() for _, _, wall in v]
    print(
        f"\n{args.slowdown:.0%} slowdown of {VICTIM}, trials={args.trials}, tolerance 5%"
        f"{', CPU burner beside' if args.burn else ''}: detected in {detected}/{args.runs} A/B "
        f"runs (passed as ok: {passed}, inconclusive: {unsure['A/B']}); A/A false alarms "
        f"{alarms}/{args.runs} (inconclusive: {unsure['A/A']}); wall per A/B run median "
        f"{statistics.median(walls):.0f} s (max {max(walls):.0f} s)"
    )


if __name__ == "__main__":
    main()
