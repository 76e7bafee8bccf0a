"""Tests of brainalign.cpu_kernels: the substituted convolutions and attention compute the same
values as PyTorch's and transformers' own, alone and inside real (tiny, random) models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_features import WHISPER_DIR, broken_grouped_conv, speech_like
from torch import nn

from brainalign import cpu_kernels as K
from brainalign import features as F
from brainalign import models as M
from brainalign.audio import TARGET_SR

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4}
TINY_WHISPER = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
                "encoder_ffn_dim": 64, "decoder_layers": 1, "decoder_attention_heads": 2,
                "decoder_ffn_dim": 64}


@pytest.fixture(autouse=True)
def probe_cache(tmp_path, monkeypatch):
    """Precision-probe decisions cached per test, never in the user's ~/.cache."""
    monkeypatch.setenv("BRAINALIGN_CACHE_DIR", str(tmp_path / "cache"))


def reference_attention(q, k, v, scale):
    """softmax(q k^T * scale) v in float64, returned batch x time x heads x dim."""
    q, k, v = (x.double() for x in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    return (w @ v).transpose(1, 2)


@pytest.mark.parametrize("block", [K.SCORE_BLOCK, 3 * 37 * 41])  # one block; 3 heads per block
def test_blocked_attention_equals_softmax_attention(monkeypatch, block):
    monkeypatch.setattr(K, "SCORE_BLOCK", block)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 8, generator=g) for n in (37, 41, 41))
    ref = reference_attention(q, k, v, 0.3)
    out, weights = K.blocked_attention(nn.Module(), q, k, v, None, scaling=0.3)
    assert weights is None and out.shape == (2, 37, 4, 8) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=2e-6)
    # under bfloat16 autocast it computes in bfloat16: rounding-level error only
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16, _ = K.blocked_attention(nn.Module(), q, k, v, None, scaling=0.3)
    assert out16.dtype == torch.bfloat16
    err = (out16.double() - ref).abs().max().item()
    assert 0 < err < 0.05


def test_blocked_attention_hands_masks_and_weights_to_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 10, 4, generator=g) for _ in range(3))
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., 7:] = -1e9  # the last three keys masked out
    module = nn.Module()
    module.is_causal = False
    out, _ = K.blocked_attention(module, q, k, v, mask, scaling=0.5)
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.5)
    torch.testing.assert_close(out, expected)
    ref = reference_attention(q[..., :7, :], k[..., :7, :], v[..., :7, :], 0.5)
    np.testing.assert_allclose(out[:, :7].numpy(), ref.numpy(), atol=1e-5)  # mask obeyed


CONVS = {
    "waveform": nn.Conv1d(1, 12, kernel_size=10, stride=5, bias=False),  # wav2vec2's first
    "waveform-bias": nn.Conv1d(1, 12, kernel_size=10, stride=5, bias=True),
    "strided": nn.Conv1d(12, 12, kernel_size=3, stride=2, bias=False),  # later CNN convs
    "grouped": nn.Conv1d(16, 16, kernel_size=16, padding=8, groups=4),  # tiny positional conv
    "grouped-wide": nn.Conv1d(96, 96, kernel_size=16, padding=8, groups=2),  # wav2vec2-base's
    "padded": nn.Conv1d(8, 6, kernel_size=3, padding=1),                # Whisper's
}


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("torch_conv", ["as is", "broken"])
def test_channels_last_conv1d_equals_conv1d(monkeypatch, name, torch_conv):
    """The substituted convolution equals PyTorch's in float32, and under bfloat16 autocast
    stays within bfloat16 rounding of the float32 result. Narrow groups (4 channels per group)
    compute in float32 there, so they are right even where torch's own bfloat16 kernel is
    garbage (``broken``: as on Intel AMX CPUs); 48 channels per group (wav2vec2-base) stay
    bfloat16."""
    conv = CONVS[name]
    torch.manual_seed(0)
    x = torch.randn(3, conv.in_channels, 203)
    with torch.no_grad():
        expected = conv(x)
        if torch_conv == "broken":
            broken_grouped_conv(monkeypatch)
        out = K.channels_last_conv1d(conv, x)
        np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=2e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16 = K.channels_last_conv1d(conv, x)
    narrow = conv.groups > 1 and conv.in_channels // conv.groups < K.MIN_REDUCED_GROUP_WIDTH
    assert out16.dtype == (torch.float32 if narrow else torch.bfloat16)
    if narrow:
        np.testing.assert_allclose(out16.numpy(), expected.numpy(), atol=2e-5)
    elif torch_conv == "as is" or conv.groups == 1:
        assert (out16.float() - expected).abs().max() < 0.05 * expected.abs().max()
    else:  # a wide group under the broken kernel: garbage, left to the precision probe
        assert (out16.float() - expected).abs().max() > 0.5 * expected.abs().max()


def test_channels_last_group_norm_equals_group_norm():
    norm = nn.GroupNorm(6, 12, affine=True)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    # a channels-last input, as the substituted convolution returns it
    x = torch.randn(2, 50, 12).transpose(1, 2) * 3 + 1
    with torch.no_grad():
        np.testing.assert_allclose(K.channels_last_group_norm(norm, x).numpy(),
                                   norm(x.contiguous()).numpy(), atol=1e-5)


@pytest.mark.parametrize("act", [nn.GELU(), nn.ReLU()], ids=["gelu", "relu"])
def test_channels_last_activation_equals_activation(act):
    """Exactly the module's own values, in the layout it was given (channels-last in and out;
    any other layout passes through as is)."""
    from transformers.activations import GELUActivation

    x = torch.randn(2, 50, 12).transpose(1, 2).to(torch.bfloat16)  # as the convolutions return
    for module in (act, GELUActivation()):
        assert K._elementwise(module)
        out = K.channels_last_activation(module, x)
        assert out.stride() == x.stride()
        torch.testing.assert_close(out, module(x.contiguous()), rtol=0, atol=0)
        flat = torch.randn(3, 7)
        torch.testing.assert_close(K.channels_last_activation(module, flat), module(flat),
                                   rtol=0, atol=0)
    assert not K._elementwise(nn.Softmax(dim=-1)) and not K._elementwise(nn.GLU())


@pytest.mark.skipif(not K.can_pack_linear(), reason="no oneDNN bfloat16 linear in this torch")
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_is_the_module_product(bias):
    """Packed for bfloat16, under bfloat16 autocast it is autocast's own bfloat16 product
    (float32 input cast, bfloat16 out; equal to bfloat16 rounding, near the float64 product);
    packed for float32, the float32 product to float32 rounding. A product in the other dtype
    (a bfloat16 model's float32 reference run) is the module's own, exactly. The packed weight
    follows in-place changes of the module's weight."""
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=bias)
    x = torch.randn(3, 17, 96)

    def exact() -> torch.Tensor:
        return x.double() @ linear.weight.double().T + (linear.bias.double() if bias else 0)

    with torch.no_grad():
        # packed for bfloat16: float32 calls are the module's own
        torch.testing.assert_close(K.packed_linear(linear, torch.bfloat16, x), linear(x),
                                   rtol=0, atol=0)
        for _ in range(2):  # the second time: the same packed weight, still right
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, ref = K.packed_linear(linear, torch.bfloat16, x), linear(x)
            assert out.dtype == ref.dtype == torch.bfloat16 and out.shape == (3, 17, 40)
            torch.testing.assert_close(out, ref, rtol=1.6e-2, atol=1e-2)
            assert (out.double() - exact()).abs().max() < 0.02 * exact().abs().max()
        # packed for float32: float32 calls to float32 rounding; autocast calls the module's
        out32 = K.packed_linear(linear, torch.float32, x)
        assert out32.dtype == torch.float32
        np.testing.assert_allclose(out32.numpy(), exact().numpy(), rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(K.packed_linear(linear, torch.float32, x), linear(x),
                                       rtol=0, atol=0)
        linear.weight.mul_(-2.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = K.packed_linear(linear, torch.bfloat16, x)
        assert (out.double() - exact()).abs().max() < 0.02 * exact().abs().max()
        np.testing.assert_allclose(K.packed_linear(linear, torch.float32, x).numpy(),
                                   exact().numpy(), rtol=1e-5, atol=1e-5)


def _substituted(model) -> list:
    """The functions that replaced module forwards, one per substituted module."""
    return [vars(m)["forward"].func for m in model.modules() if "forward" in vars(m)]


def _layers(model, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    cnn = getattr(out, "extract_features", None)  # wav2vec2-like models; not HuBERT, Whisper
    return list(out.hidden_states) + ([] if cnn is None else [cnn])


@pytest.mark.parametrize("arch", ["wav2vec2", "hubert", "data2vec-audio", "whisper", "wavlm"])
def test_substituted_models_compute_the_same_layers(arch):
    """Swapping the kernels into a float32 model (outside autocast, so they compute in float32)
    leaves every layer unchanged to float32 rounding: the substitution is exact, in every
    architecture (group-norm and layer-norm feature encoders, Whisper's convolutions; WavLM
    keeps its own attention)."""
    whisper = arch == "whisper"
    spec = M.ModelSpec("t", "random", arch, 0, TINY_WHISPER if whisper else dict(TINY))
    plain = F.LayerExtractor(spec, device="cpu", precision="float32", cpu_kernels=False)
    fast = F.LayerExtractor(spec, device="cpu", precision="float32", cpu_kernels=False)
    changed = K.optimise_for_cpu(fast.model, "bfloat16")
    assert any("convolutions" in c for c in changed)
    assert any("packed bfloat16 linear" in c for c in changed) == K.can_pack_linear()
    assert any("channels-last activations" in c for c in changed) == (not whisper)
    assert ("blocked bfloat16 attention" in changed) == (arch != "wavlm")
    if arch == "wav2vec2":
        assert "channels-last group norms" in " ".join(changed)
    torch.manual_seed(0)
    x = (torch.randn(2, 80, 3000) if whisper else torch.randn(2, 2 * TARGET_SR))
    before = _layers(plain.model, x)
    for a, b in zip(before, _layers(fast.model, x), strict=True):
        scale = a.abs().max().item()
        assert (a - b).abs().max().item() < 1e-4 * max(scale, 1.0)
    # float32 substitutions (the packed linear layers only) compute the same layers too
    fast32 = F.LayerExtractor(spec, device="cpu", precision="float32")
    assert set(_substituted(fast32.model)) <= {K.packed_linear}
    for a, b in zip(before, _layers(fast32.model, x), strict=True):
        assert (a - b).abs().max().item() < 1e-4 * max(a.abs().max().item(), 1.0)
    # and undoing it gives the model as loaded back, bit for bit
    K.restore_as_loaded(fast.model)
    assert not any("forward" in vars(m) or "_brainalign_packed" in vars(m)
                   for m in fast.model.modules())
    assert fast.model.config._attn_implementation == plain.model.config._attn_implementation
    for a, b in zip(before, _layers(fast.model, x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_extractor_uses_the_kernels_in_its_precision():
    """float32: the packed float32 linear layers only; bfloat16: every kernel."""
    spec = M.ModelSpec("t", "random", "wav2vec2", 0, dict(TINY))
    plain = F.LayerExtractor(spec, device="cpu", precision="float32")
    assert plain.model.config._attn_implementation != K.ATTENTION
    n_linear = sum(isinstance(m, nn.Linear) for m in plain.model.modules())
    pack32 = K.can_pack_linear(torch.float32)
    assert n_linear == 13 and _substituted(plain.model) == [K.packed_linear] * (
        n_linear * pack32)
    fast = F.LayerExtractor(spec, device="cpu", precision="bfloat16")
    # the kernels stay where the probe accepts bfloat16 (everywhere, we expect: the tiny
    # model's narrow positional convolution computes in float32 inside them)
    in_bf16 = fast.precision == "bfloat16"
    assert (fast.model.config._attn_implementation == K.ATTENTION) == in_bf16
    # 7 CNN convolutions and the positional one, the 8 activations after them, one group norm
    # and (where this torch has them) the packed linear layers
    expected = 8 + 8 + 1 + n_linear * K.can_pack_linear()
    assert len(_substituted(fast.model)) == (expected if in_bf16 else n_linear * pack32)
    as_loaded = F.LayerExtractor(spec, device="cpu", precision="bfloat16", cpu_kernels=False)
    assert not any("forward" in vars(m) for m in as_loaded.model.modules())
    # bfloat16 with and without the kernels: the same features up to bfloat16 rounding
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(TARGET_SR)).astype(np.float32)
    for a, b in zip(fast([audio]), as_loaded([audio]), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_kernels_route_around_a_broken_narrow_group_convolution(monkeypatch):
    """With torch's bfloat16 grouped convolutions broken (as on Intel AMX CPUs), the kernels'
    float32 narrow groups keep bfloat16 correct: the probe accepts it and the features match
    float32. A model whose groups are wide enough to stay bfloat16 gets the garbage, so the
    probe falls back to float32 and the model is restored exactly as loaded."""
    audio = speech_like(2.0, seed=9)
    narrow = M.ModelSpec("narrow", "random", "wav2vec2", 0, dict(TINY))  # 4 channels a group
    wide = M.ModelSpec("wide", "random", "wav2vec2", 0,
                       dict(TINY, hidden_size=64, num_conv_pos_embedding_groups=2))  # 32
    refs = {s.name: F.LayerExtractor(s, device="cpu", precision="float32")([audio])
            for s in (narrow, wide)}
    broken_grouped_conv(monkeypatch)
    fast = F.LayerExtractor(narrow, device="cpu", precision="bfloat16")
    assert fast.precision == "bfloat16" and fast.probe.accepted
    for a, b in zip(refs["narrow"], fast([audio]), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    fallback = F.LayerExtractor(wide, device="cpu", precision="bfloat16")
    assert fallback.precision == "float32" and fallback.probe.failing_layers == [1, 2]
    # back to the float32 model: as loaded but for its packed float32 linear layers
    assert set(_substituted(fallback.model)) <= {K.packed_linear}
    assert all(vars(m)["forward"].args[1] == torch.float32
               for m in fallback.model.modules() if "forward" in vars(m))
    assert fallback.model.config._attn_implementation != K.ATTENTION
    for a, b in zip(refs["wide"], fallback([audio]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pretrained_whisper_in_bfloat16_with_the_kernels_matches_float32():
    """Real weights (Whisper tiny.en): bfloat16 with the substituted kernels stays within
    bfloat16 rounding of the float32 model as loaded, in every layer."""
    if not WHISPER_DIR.is_dir():
        pytest.skip(f"{WHISPER_DIR} not present")
    spec = M.ModelSpec("whisper", str(WHISPER_DIR))
    audio = speech_like(8.0, seed=2)
    ref = F.LayerExtractor(spec, device="cpu", precision="float32", cpu_kernels=False)([audio])
    fast = F.LayerExtractor(spec, device="cpu", precision="bfloat16")
    # a healthy model: the probe accepts bfloat16 by a wide margin (smallest layer quantile
    # 0.9995 on AMD Zen 4; Intel AMX CPUs keep its median r > 0.9995), so the kernels stay
    assert fast.probe.accepted and min(fast.probe.quantile_r) > 0.999
    assert fast.model.config._attn_implementation == K.ATTENTION
    for a, b in zip(ref, fast([audio]), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9995
