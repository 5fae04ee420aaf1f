"""Each mechanism against the reference equality from ZOO.md, in float64 on small sizes."""

import pytest
import torch
from reference import (
    infini_attention,
    neighbourhood_attention,
    official_linear_infsa,
    official_pure_infsa,
    softmax_attention,
    windowed_attention,
)

import attention_zoo as zoo

F64 = torch.float64


def qkv(batch=2, heads=3, tokens=48, head_dim=8, scale=1.0):
    return [scale * torch.randn(batch, heads, tokens, head_dim, dtype=F64) for _ in range(3)]


def layer(name, dim=24, heads=3, **options):
    return zoo.create(name, dim, heads, **options).double()


def assert_close(actual, expected, tol=1e-12):
    err = (actual - expected).abs().max() / expected.abs().max()
    assert err < tol, f"relative error {err:.3g} >= {tol}"


def test_softmax_and_sdpa_equal_the_formula():
    q, k, v = qkv()
    expected = softmax_attention(q, k, v)
    assert_close(layer("softmax").mix(q, k, v, (6, 8)), expected)
    assert_close(layer("sdpa").mix(q, k, v, (6, 8)), expected)


def test_sdpa_records_the_backend_torch_chose_and_a_pinned_one_runs_or_says_why():
    from attention_zoo.sdpa import BACKENDS

    q, k, v = qkv()
    expected = softmax_attention(q, k, v)
    auto = layer("sdpa")
    assert auto.kernel == ""  # nothing ran yet
    auto.mix(q, k, v, (6, 8))
    assert auto.kernel in BACKENDS  # torch's own choice, by name
    for pinned in ("math", "flash"):  # the two this CPU build has
        attention = layer("sdpa", backend=pinned)
        assert_close(attention.mix(q, k, v, (6, 8)), expected)
        assert attention.kernel == pinned
    with pytest.raises(RuntimeError, match="No viable backend"):  # a GPU-only kernel on a CPU
        layer("sdpa", backend="efficient").mix(q, k, v, (6, 8))


def test_pure_infsa_matches_official_and_has_frobenius_norm_rho():
    q, k, v = qkv()
    mech = layer("infsa")
    rho = torch.sigmoid(mech.rho_logit).item()
    assert rho == pytest.approx(0.95)
    assert_close(mech.mix(q, k, v, (6, 8)), official_pure_infsa(q, k, v, rho))
    # A = mix applied to the identity "values": non-negative, ||A||_F = rho
    eye = torch.eye(48, dtype=F64).expand(2, 3, 48, 48)
    a = mech.mix(q, k, eye, (6, 8))
    assert (a >= 0).all()
    assert_close(torch.linalg.norm(a, dim=(-2, -1)), torch.full((2, 3), rho, dtype=F64), 1e-6)


def test_pure_infsa_neumann_series_converges():
    q, k, _ = qkv(batch=1, heads=1, tokens=32)
    eye = torch.eye(32, dtype=F64)[None, None]
    a = layer("infsa").mix(q, k, eye, (4, 8))[0, 0]
    assert torch.linalg.eigvals(a).abs().max() < 1
    series, power = torch.zeros_like(a), torch.eye(32, dtype=F64)
    for _ in range(200):
        power = power @ a
        series += power
    assert_close(series, torch.linalg.inv(torch.eye(32, dtype=F64) - a) - torch.eye(32, dtype=F64))


def test_linear_infsa_matches_official():
    q, k, v = qkv()
    mech = layer("linear_infsa")
    rho = torch.sigmoid(mech.rho_logit).item()
    out = mech.mix(q, k, v, (6, 8))
    assert_close(out, official_linear_infsa(q, k, v, rho))
    assert (out == out[:, :, :1]).all(), "every token must receive the same pooled output"


def test_linear_infsa_with_identical_queries_is_row_normalised_relu_attention():
    _, k, v = qkv()
    q = torch.randn(2, 3, 1, 8, dtype=F64).expand(2, 3, 48, 8)
    mech = layer("linear_infsa")
    rho = torch.sigmoid(mech.rho_logit)
    scores = torch.relu(q @ k.transpose(-2, -1) / 8)
    expected = rho * (scores / scores.sum(-1, keepdim=True)) @ v
    assert_close(mech.mix(q, k, v, (6, 8)), expected, 1e-5)  # up to the official +1e-6 terms


def test_linear_infsa_layer_forward_equals_projected_mix():
    mech = layer("linear_infsa")
    x = torch.randn(2, 48, 24, dtype=F64)
    q, k, v = mech.split_heads(x)
    mixed = mech.mix(q, k, v, (6, 8)).transpose(1, 2).reshape(2, 48, 24)
    assert_close(mech(x, (6, 8)), mech.proj(mixed))


def test_linear_attention_is_associative():
    q, k, v = qkv()
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    weights = phi_q @ phi_k.transpose(-2, -1)
    left = (weights @ v) / (weights.sum(-1, keepdim=True) + 1e-6)
    assert_close(layer("linear").mix(q, k, v, (6, 8)), left)


def test_performer_left_product_equals_right_product():
    q, k, v = qkv()
    mech = layer("performer", num_features=32)
    phi_q, phi_k = mech.feature_map(q, True), mech.feature_map(k, False)
    weights = phi_q @ phi_k.transpose(-2, -1)
    left = (weights @ v) / weights.sum(-1, keepdim=True)
    assert_close(mech.mix(q, k, v, (6, 8)), left)


def test_performer_error_against_softmax_shrinks_as_features_grow():
    q, k, v = qkv(batch=1, heads=2, tokens=256, head_dim=16, scale=0.5)
    exact = softmax_attention(q, k, v)
    errors = []
    for m in (16, 128, 1024, 8192):
        draws = [
            layer("performer", dim=32, heads=2, num_features=m, seed=s).mix(q, k, v, (16, 16))
            for s in range(4)
        ]
        errors.append(sum(((a - exact).norm() / exact.norm()).item() for a in draws) / 4)
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.3 * errors[0], errors


def test_performer_features_are_orthogonal_within_a_block():
    mech = layer("performer", dim=32, heads=2, num_features=32)
    block = mech.features[:16].double()
    gram = block @ block.T
    off_diagonal = gram - torch.diag(torch.diag(gram))
    assert off_diagonal.abs().max() < 1e-4 * gram.diag().max()


def test_linformer_with_identity_projections_and_k_equal_n_is_softmax():
    q, k, v = qkv()
    mech = layer("linformer", k=48, base_grid=(6, 8))
    with torch.no_grad():
        identity = torch.eye(48, dtype=F64).reshape(48, 6, 8)
        mech.proj_k.copy_(identity)
        mech.proj_v.copy_(identity)
    assert_close(mech.mix(q, k, v, (6, 8)), softmax_attention(q, k, v))


def test_linformer_resamples_projections_to_any_grid_keeping_parameters():
    mech = layer("linformer", k=16)
    params = sum(p.numel() for p in mech.parameters())
    for hw in [(1, 1), (7, 9), (14, 14), (30, 20)]:
        q, k, v = qkv(tokens=hw[0] * hw[1])
        assert mech.mix(q, k, v, hw).shape == v.shape
    assert params == sum(p.numel() for p in mech.parameters())
    # a constant key sequence projects to the same keys at every resolution (weighted average)
    ones = torch.ones(1, 1, 14 * 14, 1, dtype=F64)
    base = mech.projection(mech.proj_k, (14, 14), F64) @ ones
    big = mech.projection(mech.proj_k, (28, 28), F64) @ torch.ones(1, 1, 28 * 28, 1, dtype=F64)
    assert_close(big, base, 1e-2)


def test_nystrom_with_landmarks_equal_n_is_softmax():
    q, k, v = qkv(tokens=40)
    mech = layer("nystrom", num_landmarks=40, pinv_iters=40)
    assert_close(mech.mix(q, k, v, (5, 8)), softmax_attention(q, k, v), 1e-9)


def test_nystrom_uneven_segments_follow_the_official_split():
    x = torch.arange(10, dtype=F64).reshape(1, 1, 10, 1)
    means = zoo.nystrom.segment_means(x, 4).flatten().tolist()
    # 10 tokens, 4 landmarks: two segments of 2, then two of 3
    assert means == [0.5, 2.5, 5.0, 8.0]


def test_swin_single_window_without_shift_is_global_attention_with_the_bias():
    q, k, v = qkv(tokens=42)
    mech = layer("swin", window_size=7, shift=False)
    bias = mech.relative_bias(6, 7).to(F64)
    assert_close(mech.mix(q, k, v, (6, 7)), softmax_attention(q, k, v, bias))


@pytest.mark.parametrize("hw", [(13, 13), (9, 13), (14, 14), (7, 9)])
@pytest.mark.parametrize("layer_index", [0, 1])
def test_swin_matches_brute_force_windows_with_shift_and_padding(hw, layer_index):
    q, k, v = qkv(tokens=hw[0] * hw[1])
    mech = zoo.create("swin", 24, 3, window_size=5, layer_index=layer_index).double()
    expected = windowed_attention(q, k, v, hw, 5, mech.shift_size, mech.bias_table.detach())
    assert mech.shift_size == (2 if layer_index else 0)
    assert_close(mech.mix(q, k, v, hw), expected)


def test_shifted_windows_mix_across_window_borders():
    hw, window = (8, 8), 4
    q, k, v = qkv(batch=1, tokens=64)
    plain = layer("swin", window_size=window, layer_index=0)
    shifted = layer("swin", window_size=window, layer_index=1)
    v2 = v.clone()
    v2[:, :, 3 * 8 + 3] += 1.0  # token (3, 3), last of the first unshifted window
    watcher = 4 * 8 + 4  # token (4, 4), in the next window down and right
    for mech, should_change in ((plain, False), (shifted, True)):
        delta = (mech.mix(q, k, v2, hw) - mech.mix(q, k, v, hw))[:, :, watcher].abs().max()
        assert (delta > 1e-6) == should_change


@pytest.mark.parametrize(
    "grid,kernel,dilation",
    [
        ((6, 8), 3, 1),  # non-square
        ((7, 9), 5, 1),  # not a multiple of the kernel
        ((3, 4), 7, 1),  # a grid smaller than the kernel: the whole grid
        ((9, 7), 3, 2),  # dilated, sub-grids of unequal sizes
        ((5, 11), 3, 3),
    ],
)
def test_neighbourhood_attention_equals_the_brute_force_definition(grid, kernel, dilation):
    tokens = grid[0] * grid[1]
    q, k, v = qkv(tokens=tokens)
    attention = layer("neighborhood", kernel_size=kernel, dilation=dilation)
    with torch.no_grad():
        attention.bias_table.normal_()  # a bias that matters
    expected = neighbourhood_attention(q, k, v, grid, kernel, dilation, attention.bias_table)
    assert_close(attention.mix(q, k, v, grid), expected)


def test_neighbourhood_chunks_do_not_change_the_result(monkeypatch):
    from attention_zoo import neighborhood

    q, k, v = qkv(tokens=80)
    attention = layer("neighborhood", kernel_size=3)
    whole = attention.mix(q, k, v, (8, 10))
    monkeypatch.setattr(neighborhood, "_GATHER_BUDGET", 1)  # one query per chunk
    assert_close(attention.mix(q, k, v, (8, 10)), whole)


@pytest.mark.parametrize(
    "tokens,segment,update,causal",
    [
        (48, 8, "linear", False),
        (50, 8, "delta", False),  # not a multiple of the segment
        (35, 16, "delta", True),
        (12, 64, "linear", True),  # one segment: plain (causal) softmax
    ],
)
def test_infini_attention_equals_the_segment_by_segment_equations(tokens, segment, update, causal):
    q, k, v = qkv(tokens=tokens)
    attention = layer("infini", segment=segment, update=update, causal=causal)
    with torch.no_grad():
        attention.beta.normal_()  # a gate that is not one half
    expected = infini_attention(q, k, v, segment, update, causal, attention.beta)
    assert_close(attention.mix(q, k, v, (1, tokens)), expected)
