"""The ViT and the registry: shapes on awkward grids, gradients, half precision at 2^17 tokens,
and bad input."""

import pytest
import torch

import attention_zoo as zoo

ALL = zoo.available()
NOT_QUADRATIC_MEMORY = [n for n in ALL if n not in ("softmax", "infsa")]


def test_registry_finds_the_built_ins_and_orders_them_by_their_metadata():
    assert set(ALL) >= {
        "softmax",
        "sdpa",
        "infsa",
        "linear_infsa",
        "linear",
        "performer",
        "linformer",
        "nystrom",
        "swin",
    }
    # exact softmax first, then the quadratic, windowed, neighbourhood, segment and linear tiers
    assert ALL[:6] == ["sdpa", "softmax", "infsa", "swin", "neighborhood", "infini"]
    assert ALL[6:] == sorted(n for n in ALL if zoo.info(n).tier == "O(N)")
    tiers = {name: zoo.info(name).tier for name in ALL}
    assert tiers["neighborhood"] == "O(N*k^2)" and tiers["infini"] == "O(N*S)"
    assert tiers["softmax"] == tiers["infsa"] == "O(N^2)"
    assert tiers["linear_infsa"] == "O(N)" and tiers["swin"] == "O(N*w^2)"
    assert [n for n in ALL if zoo.info(n).exact_softmax] == ["sdpa", "softmax"]
    assert zoo.info("linear_infsa").arxiv == "2603.00175"
    assert zoo.info("performer").options == {"num_features": None, "seed": 0}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("grid", [(7, 9), (1, 1), (13, 13), (4, 4)])
def test_vit_output_shape_on_awkward_grids(name, grid):
    model = zoo.ViT(name, depth=2, dim=32, num_heads=4, num_classes=10)
    images = torch.randn(2, 3, 16 * grid[0], 16 * grid[1])
    logits = model(images)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    model = zoo.ViT(name, depth=2, dim=32, num_heads=4, num_classes=10)
    model(torch.randn(2, 3, 128, 96)).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient for {missing}"
    rhos = [p for n, p in model.named_parameters() if n.endswith("rho_logit")]
    assert len(rhos) == (2 if "infsa" in name else 0)


def vit_params(depth, d, patch=16, classes=1000, grid=14):
    """Analytic count: blocks (qkv, proj, 2 LayerNorms, MLP 4d), patch conv, pos, norm, head."""
    block = (3 * d * d + 3 * d) + (d * d + d) + 4 * d + (8 * d * d + 5 * d)
    return depth * block + (3 * patch * patch * d + d) + grid * grid * d + 2 * d + classes * (d + 1)


@pytest.mark.parametrize("preset", ["paper_4l", "paper_24l", "small"])
def test_presets(preset):
    model = zoo.ViT.from_preset(preset, "softmax")
    spec = zoo.PRESETS[preset]
    expected = vit_params(spec["depth"], spec["dim"])
    assert sum(p.numel() for p in model.parameters()) == expected
    assert len(model.blocks) == spec["depth"]
    assert model.blocks[0].attn.num_heads == spec["num_heads"]


@pytest.mark.parametrize("name", NOT_QUADRATIC_MEMORY)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_at_2_17_tokens_is_finite_and_not_zero(name, dtype):
    """At 2^17 tokens naive half-precision token sums overflow and silently give zeros."""
    hw = (256, 512)
    mech = zoo.create(name, 16, 1).to(dtype)
    q, k, v = (torch.randn(1, 1, hw[0] * hw[1], 16, dtype=dtype) for _ in range(3))
    if name == "sdpa":  # O(N^2) time: 512 queries against all 2^17 keys (rows are independent)
        q = q[:, :, :512]
    with torch.no_grad():
        out = mech.mix(q, k, v, hw).float()
        mech.float()
        reference = mech.mix(q.float(), k.float(), v.float(), hw)
    assert torch.isfinite(out).all()
    assert out.abs().amax() > 0
    assert (out - reference).norm() / reference.norm() < 0.05


def test_unknown_attention_names_the_choices():
    with pytest.raises(ValueError, match=f"valid choices: {', '.join(zoo.available())}"):
        zoo.create("flash", 64, 4)
    with pytest.raises(ValueError, match="valid choices"):
        zoo.ViT("nope", depth=1, dim=64, num_heads=4)


def test_unknown_option_names_the_valid_options():
    with pytest.raises(ValueError, match="valid: window_size, shift"):
        zoo.create("swin", 64, 4, window=7)


def test_heads_not_dividing_dim_names_valid_head_counts():
    with pytest.raises(
        ValueError, match=r"valid head counts: \[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]"
    ):
        zoo.create("softmax", 48, 5)
    with pytest.raises(ValueError, match="does not divide"):
        zoo.ViT("sdpa", depth=1, dim=48, num_heads=7)


def test_resolution_not_divisible_by_patch():
    model = zoo.ViT("softmax", depth=1, dim=32, num_heads=2)
    with pytest.raises(ValueError, match="not a positive multiple of patch_size 16"):
        model(torch.randn(1, 3, 225, 224))
    with pytest.raises(ValueError, match="multiple"):
        model(torch.randn(1, 3, 8, 8))


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="paper_4l, paper_24l, small"):
        zoo.ViT.from_preset("huge", "softmax")


@pytest.mark.parametrize(
    "name,options",
    [
        ("linformer", {"k": 0}),
        ("nystrom", {"num_landmarks": 0}),
        ("swin", {"window_size": 0}),
        ("performer", {"num_features": -1}),
        ("sdpa", {"backend": "fastest"}),
        ("neighborhood", {"kernel_size": 0}),
        ("neighborhood", {"dilation": 0}),
        ("infini", {"segment": 0}),
        ("infini", {"update": "hebbian"}),
    ],
)
def test_bad_option_values(name, options):
    with pytest.raises(ValueError, match=name):
        zoo.create(name, 32, 2, **options)


# timm's published parameter counts (vit_*_patch16_224, deit_*_patch16_224: class token and its
# position-embedding row included). Without a class token, as here, each model has 2 x dim fewer.
TIMM_PARAMS = {
    "deit_tiny": 5_717_416,
    "deit_small": 22_050_664,
    "deit_base": 86_567_656,
    "vit_base": 86_567_656,
    "vit_large": 304_326_632,
}


@pytest.mark.parametrize("preset", TIMM_PARAMS)
def test_presets_people_compare_against_equal_timm_without_a_class_token(preset):
    with torch.device("meta"):
        model = zoo.ViT.from_preset(preset, "softmax")
    dim = zoo.PRESETS[preset]["dim"]
    assert sum(p.numel() for p in model.parameters()) == TIMM_PARAMS[preset] - 2 * dim


def test_a_changed_preset_is_labelled_as_its_own_model():
    from fixtures import config

    assert config("model=deit_small").model_label == "deit_small"
    assert config("model=deit_small", "model.depth=6").model_label == "deit_small(depth=6)"
    changed = config("model=small", "model.dim=384", "model.num_heads=6")
    assert changed.model_label == "small(dim=384,num_heads=6)"
