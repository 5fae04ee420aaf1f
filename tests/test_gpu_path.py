"""The GPU path's defects, each fixed with a test that runs on a CPU: failure classes, float16
training warm-up, compile workers, peak memory without set-up copies, float32 accumulations
under autocast."""

import os
import time

import pytest
import torch
from fixtures import FAST, config, row

from attention_zoo.base import token_sum
from attention_zoo.nystrom import Nystrom
from harness.config import TimingConfig
from harness.measuring.timing import Timer
from harness.measuring.workload import Step, make_step
from harness.running import sweep, worker
from harness.running.app import measure


@pytest.mark.parametrize(
    "message,status",
    [
        ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", "oom"),
        ("cuDNN error: CUDNN_STATUS_ALLOC_FAILED", "oom"),
        ("CUDA driver error: CUDA_ERROR_OUT_OF_MEMORY", "oom"),
        ("CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
        # a real bug or a corrupted context looks the same: measured again, not kept as a limit
        ("CUDA error: an illegal memory access was encountered", "error"),
        ("CUDA error: invalid configuration argument", "kernel_limit"),
        ("Expected canUse32BitIndexMath(input) to be true", "kernel_limit"),
        ("mat1 and mat2 shapes cannot be multiplied", "error"),
    ],
)
def test_gpu_failures_are_classified(message, status):
    assert worker.classify(RuntimeError(message)) == status


def test_kernel_limits_are_kept_by_resume_and_skip_larger_sizes_but_cuda_faults_do_neither():
    limited = row("sdpa", 4096, status="kernel_limit")
    assert sweep.previous(limited, [limited]) is limited
    bigger = row("sdpa", 8192)
    assert sweep.smaller_oom(bigger, [limited]) is limited  # the larger size hits it too
    assert sweep.smaller_oom(row("sdpa", 2048), [limited]) is None
    fault = row("sdpa", 4096, status="error", error="CUDA error: an illegal memory access")
    assert sweep.previous(fault, [fault]) is None  # measured again
    assert sweep.smaller_oom(bigger, [fault]) is None


def test_warm_up_waits_until_the_step_has_settled():
    calls = []
    settled_after = 7
    step = Step(lambda: calls.append(1), lambda: len(calls) >= settled_after)
    timer = Timer(step, torch.device("cpu"), TimingConfig(warmup_iters=2, warmup_s=0, window_s=0))
    timer.warm_up()
    assert len(calls) == settled_after  # until settled (a 0 s window needs no estimate step)


def test_float16_training_settles_its_grad_scaler():
    step = make_step(
        config("mode=train", "dtype=float16", "resolution=32", "model.depth=1"), torch.device("cpu")
    )
    results = []
    for _ in range(12):
        step()
        results.append(step.ready())
    assert results[-1] is True


def test_compiled_cells_compile_without_a_worker_pool(monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    make_step(config("compile=true", "resolution=32", "model.depth=1"), torch.device("cpu"))
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "1"


def test_inference_peak_memory_has_no_float32_set_up_copies():
    cfg = config(
        "model.dim=1024",
        "model.num_heads=16",
        "model.depth=2",
        "resolution=32",
        "dtype=bfloat16",
        "device=cpu",
        *FAST,
    )
    row_, _ = measure(cfg)
    weights = row_["params"] * 2  # bfloat16
    assert row_["status"] == "ok"
    assert row_["peak_mem_bytes"] < 1.5 * weights  # float32 copies would be 2x the weights


def test_float32_sums_stay_float32_under_autocast():
    a = torch.randn(1, 2, 4096, 16)
    b = torch.randn(1, 2, 4096, 16)
    exact = a.double().transpose(-2, -1) @ b.double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        summed = token_sum(a, b)
    assert summed.dtype == torch.float32
    assert ((summed.double() - exact).norm() / exact.norm()) < 1e-5  # bfloat16 gives ~1e-3


def test_nystrom_pseudo_inverse_runs_in_float32_under_autocast():
    torch.manual_seed(0)
    layer = Nystrom(32, 2, num_landmarks=8, pinv_iters=6)
    q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
    plain = layer.mix(q, k, v, (8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = layer.mix(q, k, v, (8, 8)).float()
    # bfloat16 inputs to the kernels are autocast's choice; the pinv itself stays float32
    assert ((mixed - plain).norm() / plain.norm()) < 0.05


def test_a_slow_step_is_estimated_by_its_last_warm_up_step_and_a_fast_one_as_before():
    def counted(seconds):
        calls = []

        def step():
            calls.append(1)
            time.sleep(seconds)

        return calls, step

    config = TimingConfig(warmup_iters=2, warmup_s=0, window_s=0.2, min_iters=3)
    calls, slow = counted(0.15)  # >= window / (min_iters - 1): the window is 3 steps anyway
    timer = Timer(slow, torch.device("cpu"), config)
    timer.warm_up()
    assert len(calls) == 2 and timer.estimate_s >= 0.15  # no estimate steps beyond warm-up
    assert timer.planned_iters() == 3
    calls, fast = counted(0.0)
    timer = Timer(fast, torch.device("cpu"), config)
    timer.warm_up()
    assert len(calls) == 2 + 3  # warm-up, then the median of three estimate steps
