"""What the InfSA paper states (reference/PAPER.md): A100 40 GB, 4-layer models, inference."""

from __future__ import annotations

# (claim, mechanism, column, stated value) at 1024². The paper does not say how it measured
# energy; energy x throughput is ~200 W for both models, a board's whole draw, so its J/img is
# compared with the total (idle included), not with the energy above idle.
AT_1024 = [
    ("throughput, Standard ViT (img/s)", "softmax", "throughput_img_s", 17.19),
    ("throughput, Linear InfViT (img/s)", "linear_infsa", "throughput_img_s", 230.95),
    ("energy, Standard ViT (J/img, total: idle included)", "softmax", "energy_j_per_img", 11.63),
    (
        "energy, Linear InfViT (J/img, total: idle included)",
        "linear_infsa",
        "energy_j_per_img",
        0.87,
    ),
    ("latency, Standard ViT (ms/img)", "softmax", "ms_per_img", 58.16),
    ("latency, Linear InfViT (ms/img)", "linear_infsa", "ms_per_img", 4.33),
    ("power = energy x throughput, Standard ViT (W)", "softmax", "avg_power_w", 17.19 * 11.63),
    (
        "power = energy x throughput, Linear InfViT (W)",
        "linear_infsa",
        "avg_power_w",
        230.95 * 0.87,
    ),
]
SPEEDUP = 13.4  # Linear InfViT over the Standard ViT, throughput at 1024²
MAX_RESOLUTION = {"softmax": 1024, "linear_infsa": 9216}
AT_224 = [
    ("params, Standard ViT 4L (M)", "softmax", "params", 57.7e6),
    ("params, Linear InfViT 4L (M)", "linear_infsa", "params", 53.5e6),
    ("params, Pure InfViT 4L (M)", "infsa", "params", 57.7e6),
    ("GFLOPs, Standard ViT 4L", "softmax", "flops", 17.5e9),
    ("GFLOPs, Linear InfViT 4L", "linear_infsa", "flops", 59e9),
    ("GFLOPs, Pure InfViT 4L", "infsa", "flops", 59e9),
]
HARDWARE = "A100 40 GB"
MODEL = "paper_4l"
