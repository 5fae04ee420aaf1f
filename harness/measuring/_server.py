"""Imported once by the fork server that every measuring process is forked from: torch, the zoo,
fvcore and a FLOP count already done (the first trace costs ~1 s), the profiler started once
(its first start costs ~0.8 s), never CUDA. See harness.running.worker."""

import torch  # noqa: F401

from harness.measuring import flops, measure  # noqa: F401
from harness.measuring.meters import allocator

flops.warm_up()
allocator.warm_up()
