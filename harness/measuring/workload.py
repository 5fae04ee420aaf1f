"""The work of a cell: its model in place, its input, and the step the timer repeats."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from attention_zoo.base import Attention
from harness.config import Config
from harness.measuring.cell import build

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Step:
    """The step the timer repeats, and whether warming it up is done (float16 training: once
    GradScaler's scale has settled, so that the timed steps are real optimizer steps)."""

    def __init__(
        self,
        run: Callable[[], None],
        ready: Callable[[], bool] = lambda: True,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.run, self.ready, self.model = run, ready, model

    def kernel(self) -> str:
        """What ran the token mixing, as the first attention block says once it has run (sdpa:
        the backend torch chose); empty where the mechanism cannot tell."""
        if self.model is None:
            return ""
        return next((str(m.kernel) for m in self.model.modules() if isinstance(m, Attention)), "")

    def __call__(self) -> None:
        self.run()


def make_step(cfg: Config, device: torch.device) -> Step:
    """Model and input on `device`, ready to run. Inference casts the model and input to the
    cell's dtype; training keeps float32 weights under autocast (GradScaler for float16).
    torch.compile compiles in this process (no worker pool that could show up on the GPU)."""
    if cfg.compile:
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    dtype = DTYPES[cfg.dtype]
    torch.manual_seed(0)
    model = build(cfg)
    if cfg.mode == "infer":
        model = model.eval().to(dtype)  # cast before moving: no float32 copy on the device
    model = model.to(device)
    images = torch.randn(cfg.batch_size, 3, *cfg.hw, device=device, dtype=torch.float32)
    mode = None if cfg.compile_mode == "default" else cfg.compile_mode
    forward = torch.compile(model, mode=mode) if cfg.compile else model
    if cfg.mode == "infer":
        images = images.to(dtype)

        def infer() -> None:
            with torch.inference_mode():
                forward(images)

        return Step(infer, model=model)
    model.train()
    labels = torch.randint(0, 1000, (cfg.batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = dtype != torch.float32

    scales: list[float] = []

    def train() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # float16: reads the inf check back to the host (a sync)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def settled() -> bool:
        """GradScaler skips the optimizer step while it calibrates; settled = the scale did not
        change over the last three warm-up steps."""
        if not scaler.is_enabled():
            return True
        scales.append(scaler.get_scale())
        return len(scales) >= 3 and len(set(scales[-3:])) == 1

    return Step(train, settled, model)
