"""Tests of brainalign.cpu_kernels: the substituted convolutions and attention compute the same
values as PyTorch's and transformers' own, alone and inside real (tiny, random) models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_features import WHISPER_DIR, speech_like
from torch import nn

from brainalign import cpu_kernels as K
from brainalign import features as F
from brainalign.audio import TARGET_SR

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4}
TINY_WHISPER = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
                "encoder_ffn_dim": 64, "decoder_layers": 1, "decoder_attention_heads": 2,
                "decoder_ffn_dim": 64}


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


@pytest.mark.parametrize("conv", [
    nn.Conv1d(1, 12, kernel_size=10, stride=5, bias=False),   # wav2vec2's first conv (matmul)
    nn.Conv1d(1, 12, kernel_size=10, stride=5, bias=True),
    nn.Conv1d(12, 12, kernel_size=3, stride=2, bias=False),   # the later feature-encoder convs
    nn.Conv1d(16, 16, kernel_size=16, padding=8, groups=4),   # the positional convolution
    nn.Conv1d(8, 6, kernel_size=3, padding=1),                # Whisper's
], ids=["waveform", "waveform-bias", "strided", "grouped", "padded"])
def test_channels_last_conv1d_equals_conv1d(conv):
    torch.manual_seed(0)
    x = torch.randn(3, conv.in_channels, 203)
    with torch.no_grad():
        expected = conv(x)
        out = K.channels_last_conv1d(conv, x)
        np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=2e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16, ref16 = K.channels_last_conv1d(conv, x), conv(x)
    assert out16.dtype == ref16.dtype == torch.bfloat16
    assert (out16.float() - expected).abs().max() < 0.05 * expected.abs().max()


def test_channels_last_group_norm_equals_group_norm():
    norm = nn.GroupNorm(6, 12, affine=True)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    # a channels-last input, as the substituted convolution returns it
    x = torch.randn(2, 50, 12).transpose(1, 2) * 3 + 1
    with torch.no_grad():
        np.testing.assert_allclose(K.channels_last_group_norm(norm, x).numpy(),
                                   norm(x.contiguous()).numpy(), atol=1e-5)


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
    spec = F.ModelSpec("t", "random", arch, 0, TINY_WHISPER if whisper else dict(TINY))
    plain = F.LayerExtractor(spec, device="cpu", precision="float32")
    fast = F.LayerExtractor(spec, device="cpu", precision="float32")
    changed = K.optimise_for_cpu(fast.model, "bfloat16")
    assert any("convolutions" in c for c in changed)
    assert ("blocked bfloat16 attention" in changed) == (arch != "wavlm")
    if arch == "wav2vec2":
        assert "channels-last group norms" in " ".join(changed)
    torch.manual_seed(0)
    x = (torch.randn(2, 80, 3000) if whisper else torch.randn(2, 2 * TARGET_SR))
    for a, b in zip(_layers(plain.model, x), _layers(fast.model, x),
                    strict=True):
        scale = a.abs().max().item()
        assert (a - b).abs().max().item() < 1e-4 * max(scale, 1.0)


def test_extractor_uses_the_kernels_only_in_bfloat16():
    spec = F.ModelSpec("t", "random", "wav2vec2", 0, dict(TINY))
    plain = F.LayerExtractor(spec, device="cpu", precision="float32")
    assert plain.model.config._attn_implementation != K.ATTENTION
    assert not any("forward" in vars(m) for m in plain.model.modules())
    fast = F.LayerExtractor(spec, device="cpu", precision="bfloat16")
    assert fast.model.config._attn_implementation == K.ATTENTION
    assert sum("forward" in vars(m) for m in fast.model.modules()) == 7 + 1 + 1  # convs, GN
    as_loaded = F.LayerExtractor(spec, device="cpu", precision="bfloat16", cpu_kernels=False)
    assert not any("forward" in vars(m) for m in as_loaded.model.modules())
    # bfloat16 with and without the kernels: the same features up to bfloat16 rounding
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(TARGET_SR)).astype(np.float32)
    for a, b in zip(fast([audio]), as_loaded([audio]), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_pretrained_whisper_in_bfloat16_with_the_kernels_matches_float32():
    """Real weights (Whisper tiny.en): bfloat16 with the substituted kernels stays within
    bfloat16 rounding of the float32 model as loaded, in every layer."""
    if not WHISPER_DIR.is_dir():
        pytest.skip(f"{WHISPER_DIR} not present")
    spec = F.ModelSpec("whisper", str(WHISPER_DIR))
    audio = speech_like(8.0, seed=2)
    ref = F.LayerExtractor(spec, device="cpu", precision="float32", cpu_kernels=False)([audio])
    fast = F.LayerExtractor(spec, device="cpu", precision="bfloat16")
    assert fast.model.config._attn_implementation == K.ATTENTION
    for a, b in zip(ref, fast([audio]), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9995
