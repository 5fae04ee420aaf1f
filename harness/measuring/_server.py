"""Imported once by the fork server that every measuring process is forked from: torch, the zoo,
fvcore and a FLOP count already done (the first trace costs ~1 s), never CUDA. See
harness.running.worker."""

import torch  # noqa: F401

from . import flops, measure  # noqa: F401

flops.warm_up()
