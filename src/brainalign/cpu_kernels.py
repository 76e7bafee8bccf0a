"""Faster CPU paths for the heaviest operations of the speech models, swapped in after loading.

Three substitutions, all exact up to floating-point rounding (tests/test_cpu_kernels.py):

- Convolutions run as 2-D convolutions on channels-last tensors (oneDNN's fast layout), so the
  wav2vec2-family CNN feature encoder keeps its activations channels-last from layer to layer,
  and GroupNorm normalises them in that layout; a convolution of a single input channel (the
  first, on the waveform) is a matrix product over a strided view of the waveform. This takes
  the feature encoder from 300 to 420 GFLOP/s in bfloat16 on 2 Zen 4 cores (the matmul peak)
  and the grouped positional convolution from 240 to 360. The activations between those
  convolutions run over the same memory as a contiguous (batch, time, channels) tensor, where
  PyTorch's elementwise kernels are about twice as fast as on the permuted layout.
- In bfloat16, self-attention is computed a few heads at a time (scores of one block stay in
  cache), with the softmax in bfloat16 as eager attention would round it before the value
  product anyway: 225 GFLOP/s against 130 for PyTorch's CPU flash-attention kernel on
  wav2vec2-base's 749-frame windows.
- Linear layers (bfloat16 and float32) multiply by a copy of their weight in the compute
  dtype laid out once in oneDNN's blocked format (kept on the module). In bfloat16, autocast
  cast the float32 weight on every call and oneDNN reordered it again: the same bfloat16
  product (bit for bit on Zen 4) at 340-390 GFLOP/s instead of 290-330 on wav2vec2-base's
  768 x 768 and 768 x 3072 layers (2 Zen 4 cores, 750 to 3 000 frames); with the
  channels-last activations, 60 s of audio in 7.7-8.2 s instead of 8.7-9.1 s (best of 3,
  interleaved; benchmarks/README.md). In float32, oneDNN's product replaces the MKL sgemm
  torch calls, which on AMD CPUs runs at 110-137 GFLOP/s against oneDNN's 150-190: 60 s of
  audio in 15.0-16.2 s instead of 18.8-19.0 s (wav2vec2-base, batch 4; float32 rounding).

Measured end to end (4 windows of 15 s, wav2vec2-base, bfloat16, 2 cores): 3.19 s -> 2.70 s
(the convolutions and attention). A float32 model gets only the packed linear layers; CUDA
models run as loaded. Grouped convolutions narrower than :data:`MIN_REDUCED_GROUP_WIDTH`
channels per group compute in float32 even under bfloat16 autocast, where some CPUs' bfloat16
kernels are wrong.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: precisions whose linear layers are packed for oneDNN, and their dtypes
PACKED = {"bfloat16": torch.bfloat16, "float32": torch.float32}
#: name under which :func:`blocked_attention` is registered with transformers
ATTENTION = "brainalign_blocked"
#: attention scores computed at once, in elements (a few MB: the block stays in cache)
SCORE_BLOCK = 2**21
#: input channels per group below which a grouped convolution is computed in float32 under
#: autocast. On Intel Xeon CPUs with AMX-BF16 (torch 2.13) bfloat16 convolutions with 4
#: channels per group (the tiny test models' positional convolution; also 64 channels in 16
#: groups) return garbage (relative error ~1), while 48 per group (wav2vec2-base's positional
#: convolution) and ungrouped ones are right to rounding. 32 keeps wav2vec2-base-sized models
#: in bfloat16 (their speed unchanged) and puts the known-bad widths, with margin, in float32;
#: such narrow convolutions are cheap (their work scales with the channels per group).
#: Reduced-precision failures elsewhere are caught by brainalign.precision.probe_precision.
MIN_REDUCED_GROUP_WIDTH = 32


def blocked_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None,
                      scaling: float | None = None, dropout: float = 0.0, **kwargs
                      ) -> tuple[torch.Tensor, None]:
    """Unmasked self-attention a few heads at a time, in the autocast (or input) dtype.

    The signature of a transformers attention function (query, key, value: batch x heads x time
    x head_dim; returns batch x time x heads x head_dim). Masks, dropout, causal modules, CUDA
    tensors and requests for the attention weights go to transformers' SDPA implementation.
    """
    if (attention_mask is not None or dropout or query.device.type != "cpu"
            or getattr(module, "is_causal", False) or kwargs.get("output_attentions")):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    b, h, t, d = query.shape
    tk = key.shape[2]
    dtype = (torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
             else query.dtype)
    scale = d**-0.5 if scaling is None else scaling
    with torch.autocast("cpu", enabled=False):
        q = (query.to(dtype) * scale).reshape(b * h, t, d)
        k = key.to(dtype).reshape(b * h, tk, d)
        v = value.to(dtype).reshape(b * h, tk, d)
        out = torch.empty_like(q)
        g = max(1, min(b * h, SCORE_BLOCK // (t * tk)))
        scores = torch.empty(g, t, tk, dtype=dtype)
        for i in range(0, b * h, g):
            n = min(g, b * h - i)
            s = scores[:n]
            torch.bmm(q[i:i + n], k[i:i + n].transpose(1, 2), out=s)
            torch.ops.aten._softmax.out(s, -1, False, out=s)
            torch.bmm(s, v[i:i + n], out=out[i:i + n])
    return out.view(b, h, t, d).transpose(1, 2).contiguous(), None


def packed_linear(linear: nn.Linear, dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``; when it computes in ``dtype`` on the CPU (bfloat16: under bfloat16
    autocast; float32: float32 input, no autocast), with a ``dtype`` copy of the weight laid out
    once for oneDNN (:func:`_packed`) instead of cast and reordered on every call. Otherwise (a
    bfloat16 model's float32 reference run for the precision probe, say) the module's own
    product."""
    computes_in = (torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                   else x.dtype)
    if x.device.type != "cpu" or computes_in != dtype:
        return F.linear(x, linear.weight, linear.bias)
    weight, bias = _packed(linear, dtype)
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "none", [], "")


def _packed(linear: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``dtype`` weight (oneDNN-blocked) and bias of ``linear``, made on first use and
    remade if either parameter has changed since (tensor version or storage)."""
    params = [p for p in (linear.weight, linear.bias) if p is not None]
    key = (dtype, *((p.data_ptr(), p._version) for p in params))
    cached = vars(linear).get("_brainalign_packed")
    if cached is None or cached[0] != key:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            weight = linear.weight.detach().to(dtype).contiguous()
            weight = torch.ops.mkldnn._reorder_linear_weight(weight)
            bias = (None if linear.bias is None
                    else linear.bias.detach().to(dtype).contiguous())
        cached = (key, weight, bias)
        linear._brainalign_packed = cached
    return cached[1], cached[2]


def can_pack_linear(dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether this torch has oneDNN's packed linear (a private op inductor uses) in ``dtype``."""
    try:
        return (torch.backends.mkldnn.is_available()
                and (dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported())
                and hasattr(torch.ops.mkldnn, "_linear_pointwise")
                and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))
    except (AttributeError, RuntimeError):
        return False


def channels_last_conv1d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` computed as a channels-last 2-D convolution (same weights, same values; the
    output is a (batch, channels, time) tensor laid out channels-last).

    A grouped convolution with fewer than :data:`MIN_REDUCED_GROUP_WIDTH` input channels per
    group is computed in float32 with autocast off (its float32 output then flows on), because
    some CPUs' reduced-precision kernels for them are wrong (see the constant).
    """
    weight = conv.weight  # recomputed by a weight-norm parametrisation, if any
    if (conv.groups > 1 and conv.in_channels // conv.groups < MIN_REDUCED_GROUP_WIDTH
            and torch.is_autocast_enabled(x.device.type)):
        with torch.autocast(x.device.type, enabled=False):
            return channels_last_conv1d(conv, x.float())
    if (conv.in_channels == 1 and conv.groups == 1 and conv.padding == (0,)
            and conv.dilation == (1,)):
        # im2col is a strided view of the waveform: one matmul, channels-last output
        frames = x[:, 0].unfold(-1, conv.kernel_size[0], conv.stride[0])
        return F.linear(frames, weight[:, 0], conv.bias).transpose(1, 2)
    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x4, weight.unsqueeze(2).contiguous(memory_format=torch.channels_last),
                 conv.bias, stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),
                 dilation=(1, conv.dilation[0]), groups=conv.groups)
    return y.squeeze(2)


def channels_last_activation(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` for an elementwise activation module; a channels-last (batch, channels, time)
    ``x`` goes through as its contiguous (batch, time, channels) transpose (same values, same
    layout out: the elementwise pass runs over contiguous memory)."""
    forward = type(act).forward
    if x.dim() == 3 and x.transpose(1, 2).is_contiguous():
        return forward(act, x.transpose(1, 2)).transpose(1, 2)
    return forward(act, x)


def _elementwise(module: nn.Module) -> bool:
    """Whether ``module`` is an elementwise activation (torch's or transformers')."""
    return (isinstance(module, (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Mish))
            or type(module).__module__ == "transformers.activations")


def restore_as_loaded(model: nn.Module) -> None:
    """Undo :func:`optimise_for_cpu`: the modules' own forwards and the attention
    implementation the model had before."""
    for module in model.modules():
        forward = vars(module).get("forward")
        if (isinstance(forward, functools.partial)
                and forward.func in (channels_last_conv1d, channels_last_group_norm,
                                     channels_last_activation, packed_linear)):
            del module.forward
        vars(module).pop("_brainalign_packed", None)
    if hasattr(model, "_brainalign_attn_as_loaded"):
        model.set_attn_implementation(model._brainalign_attn_as_loaded)
        del model._brainalign_attn_as_loaded


def channels_last_group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` of (batch, channels, time) input, computed in the channels-last layout."""
    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    return F.group_norm(x4, norm.num_groups, norm.weight, norm.bias, norm.eps).squeeze(2)


def _convertible(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv1d) and "forward" not in vars(conv)
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple))


def optimise_for_cpu(model: nn.Module, precision: str) -> list[str]:
    """Swap in the packed linear layers (bfloat16 or float32) and, in bfloat16, the
    channels-last convolutions (with the group norms and activations of their 3-D outputs) and
    the blocked attention; returns what was changed, for the log. In float32 only the linear
    layers change: there oneDNN's 1-D convolutions and PyTorch's attention kernel are as fast
    (wav2vec2-base, 4 windows of 15 s: 5.23 s as loaded, 5.17-5.31 s with the substitutions)."""
    changed: list[str] = []
    if precision not in PACKED:
        return changed
    dtype = PACKED[precision]
    # the modules stay (names, attributes, weight-norm parametrisations); only their forward
    # is replaced, on the instance
    n_conv = n_norm = n_act = n_linear = 0
    pack = can_pack_linear(dtype)
    for module in list(model.modules()):
        for child in module.children():
            if pack and type(child) is nn.Linear and "forward" not in vars(child):
                child.forward = functools.partial(packed_linear, child, dtype)
                n_linear += 1
            elif dtype != torch.bfloat16:
                continue
            elif _convertible(child):
                child.forward = functools.partial(channels_last_conv1d, child)
                n_conv += 1
            elif isinstance(child, nn.GroupNorm) and _feeds_on_conv1d(module):
                child.forward = functools.partial(channels_last_group_norm, child)
                n_norm += 1
            elif (_elementwise(child) and "forward" not in vars(child)
                  and _feeds_on_conv1d(module)):
                child.forward = functools.partial(channels_last_activation, child)
                n_act += 1
    if n_conv:
        changed.append(f"{n_conv} channels-last convolutions")
    if n_norm:
        changed.append(f"{n_norm} channels-last group norms")
    if n_act:
        changed.append(f"{n_act} channels-last activations")
    if n_linear:
        changed.append(f"{n_linear} packed {precision} linear layers")
    if dtype == torch.bfloat16 and _use_blocked_attention(model):
        changed.append("blocked bfloat16 attention")
    return changed


def _feeds_on_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` (the parent of a GroupNorm) is a conv layer of 3-D activations."""
    return any(isinstance(c, nn.Conv1d) for c in module.children())


def _use_blocked_attention(model: nn.Module) -> bool:
    """Register :func:`blocked_attention` with transformers and select it for ``model``; False
    (model unchanged) for transformers without attention interfaces or models that do not use
    them (WavLM's relative-position attention)."""
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return False
    try:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION, blocked_attention)
        previous = model.config._attn_implementation
        model.set_attn_implementation(ATTENTION)
        model._brainalign_attn_as_loaded = previous
    except (ImportError, AttributeError, ValueError) as err:
        log.info("blocked attention not used (%s)", err)
        return False
    return model.config._attn_implementation == ATTENTION
