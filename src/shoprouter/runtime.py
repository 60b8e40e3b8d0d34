"""A lean inference forward of the Gemma 3 text decoder, for routing: suffixes scored on a shared prefix cache.

The Hugging Face implementation is used for training (PEFT needs it) and is the reference this one is
tested against. Routing runs the same arithmetic with less around it: q/k/v and gate/up fused into one
matmul each (4 matmuls a layer instead of 7), grouped-query attention without copying the key/value heads,
the shared prefix attended with one matmul for the whole batch instead of a per-row copy of its cache,
per-token work (norms, weight matmuls, MLP) on the real tokens only, not on padding, no mask objects,
final hidden states computed only at the positions asked for, and (on CPUs with oneDNN) weights reordered
once into oneDNN's blocked layout, which a plain matmul otherwise redoes on every call.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class Linear:
    """A bias-free linear map y = x W^T, with W prepacked for oneDNN where that is available."""

    def __init__(self, weight: torch.Tensor, pack: bool):
        self.out_features = weight.shape[0]
        self.packed = False
        if pack:
            try:
                self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, 32)
                self.packed = True
                return
            except (AttributeError, RuntimeError):
                pass
        self.weight = weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return F.linear(x, self.weight)
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.weight, None, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


@functools.lru_cache(maxsize=1)
def cpu_has_vnni() -> bool:
    """True when the CPU has VNNI int8 dot products (Linux /proc/cpuinfo); without them fbgemm's 8-bit inputs
    can saturate its 16-bit intermediate sums, so inputs are quantised to 7 bits instead."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


class Int8Linear:
    """y = x W^T with W stored as int8, one scale per output row (half the bytes of bf16); the input is
    quantised to int8 on every call (7 bits on CPUs without VNNI) and the product comes back in float32.

    PyTorch's dynamic-quantisation kernels (fbgemm) quantise a call's whole input with one range, its min and
    max. Here every row (token) is first scaled to peak 1 (undone on the output), so a token with large
    activations does not cost the others their precision, and two constant input columns, +1 and -1, with
    zero weights, pin every call's range to exactly [-1, 1]: each token is quantised the same way whatever
    else is in the call, so a message's scores do not depend on the batch it is routed in."""

    def __init__(self, weight: torch.Tensor):
        w = weight.detach().float()
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        w = torch.cat([w, w.new_zeros(w.shape[0], 2)], dim=1)  # the weights of the two range columns
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
        with warnings.catch_warnings():  # the quantised-tensor constructors warn that they are deprecated
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
        self.weight = torch.ops.quantized.linear_prepack(q, None)
        self.reduce_range = not cpu_has_vnni()
        self.range_columns = torch.tensor([1.0, -1.0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()
        # abs + amax: vector_norm(inf) measured 10-20x slower
        peak = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
        u = rows.new_empty(rows.shape[0], self.in_features + 2)
        torch.div(rows, peak, out=u[:, : self.in_features])
        u[:, self.in_features:] = self.range_columns  # one copy for both columns, not two fills
        y = torch.ops.quantized.linear_dynamic(u, self.weight, reduce_range=self.reduce_range).mul_(peak)
        return y.view(*x.shape[:-1], self.out_features)


class _AbsMax:
    """Wraps a linear map and records the largest |input| per input channel (calibration)."""

    def __init__(self, linear: Linear):
        self.linear, self.peak = linear, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = x.detach().float().reshape(-1, x.shape[-1]).abs().amax(dim=0)
        self.peak = m if self.peak is None else torch.maximum(self.peak, m)
        return self.linear(x)


SMOOTH_ALPHA = 0.5  # SmoothQuant's migration strength: how much of the activations' range moves into weights


def _smooth_scale(x_peak: torch.Tensor, w_peak: torch.Tensor, alpha: float = SMOOTH_ALPHA) -> torch.Tensor:
    """SmoothQuant's per-input-channel scale s = max|x|^a / max|w|^(1-a), from the largest |input| and |weight|
    per input channel; x / s and W * s give the same product with flatter activations."""
    return (x_peak.clamp(min=1e-5).pow(alpha) / w_peak.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


def _column_peak(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().amax(dim=0)


QUANTIZATIONS = ("int8",)


def can_pack(dtype: torch.dtype) -> bool:
    """True when oneDNN can prepack weights of this dtype on this machine (checked on a tiny matrix)."""
    try:
        w = torch.zeros(8, 8, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        torch.ops.mkldnn._linear_pointwise(torch.zeros(1, 8, dtype=dtype), packed, None, "none", [], "")
        return True
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Layer:
    """One decoder layer's weights (norm weights already as 1 + w, in float32)."""

    qkv: Linear | Int8Linear  # [(n_heads + 2 * n_kv) * head_dim, hidden]
    o: Linear | Int8Linear
    gate_up: Linear | Int8Linear  # [2 * intermediate, hidden]
    down: Linear | Int8Linear
    input_norm: torch.Tensor
    post_attn_norm: torch.Tensor
    pre_ff_norm: torch.Tensor
    post_ff_norm: torch.Tensor
    # [n_heads + n_kv, head_dim]: q_norm's (1 + w) x attention scaling per query head, then k_norm's (1 + w)
    qk_norm: torch.Tensor
    inv_freq: torch.Tensor
    window: int | None  # sliding window, None for full attention


PrefixCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys^T [n_kv, hd, P], values [n_kv, P, hd]


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm: normalise in float32, scale by (1 + w), back to the input dtype."""
    return F.rms_norm(x.float(), (x.shape[-1],), weight, eps).to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the rotate-half layout: x cos + (-x2, x1) sin, with the minus already in `signed_sin`'s first
    half, so the rotation is one roll (three kernel calls instead of five)."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


class _Geometry:
    """Attention mask and RoPE cos/sin for L suffix positions after P prefix positions, made once per
    attention kind (sliding window, RoPE base) and shared by the layers of that kind. The mask is repeated
    for the `groups` query heads that share a key/value head (they are laid out one after another)."""

    def __init__(self, P: int, L: int, dtype: torch.dtype, groups: int):
        self.P, self.L, self.dtype, self.groups = P, L, dtype, groups
        self.masks: dict[int | None, torch.Tensor] = {}
        self.trig: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def of(self, layer: Layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mask, cos, signed sin) for `layer` (see `_rope`)."""
        if layer.window not in self.masks:
            self.masks[layer.window] = _mask(self.P, self.L, layer.window).repeat(self.groups, 1)
        key = -1 if layer.window is None else layer.window  # one RoPE base per attention kind
        if key not in self.trig:
            pos = torch.arange(self.P, self.P + self.L, dtype=torch.float)
            freqs = pos[:, None] * layer.inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            sin = emb.sin()
            sin[:, : sin.shape[1] // 2] *= -1
            self.trig[key] = (emb.cos().to(self.dtype), sin.to(self.dtype))
        cos, sin = self.trig[key]
        return self.masks[layer.window], cos, sin


class _Packing:
    """Where the real tokens of right-padded suffixes [B, L] sit, so that everything computed per token (norms,
    weight matmuls, MLP) runs on those N tokens alone, [N, hidden], and only attention sees the padded [B, L]
    layout (padding keys come after every real query, so the causal mask already hides them)."""

    def __init__(self, lengths: torch.Tensor, B: int, L: int):
        self.B, self.L = B, L
        real = torch.arange(L)[None, :] < lengths[:, None]
        self.sel = real.reshape(-1).nonzero().squeeze(1)  # flat indices into B * L
        self.index = torch.full((B * L,), -1, dtype=torch.long)
        self.index[self.sel] = torch.arange(len(self.sel))

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """[N, D] -> [B, L, D], zeros at the padding."""
        out = t.new_zeros(self.B * self.L, t.shape[-1])
        return out.index_copy_(0, self.sel, t).view(self.B, self.L, -1)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [N, D]."""
        return t.reshape(self.B * self.L, -1).index_select(0, self.sel)


class SuffixDecoder:
    """Gemma 3 decoder weights arranged for batched suffix scoring on a cached prefix (inference only)."""

    def __init__(self, cfg, tensor: Callable[[str], torch.Tensor], embedding: torch.Tensor, embed_scale: float,
                 dtype: torch.dtype, quantize: str | None = None, calibration: list[int] | None = None):
        """Arrange the weights of a Gemma 3 text decoder.

        `cfg`: its `Gemma3TextConfig`; `tensor(name)`: a weight by its name inside the decoder
        (`layers.0.self_attn.q_proj.weight`, `norm.weight`, ...); `embedding`: the token-embedding table,
        anything indexed as `embedding[ids]` (e.g. `model.FileRows`, rows read from disk on lookup, so the
        262,144-row table is not kept in memory); rows are cast to the hidden states' dtype on lookup.
        `quantize="int8"`: the weight matmuls in int8 (`Int8Linear`); the hidden states between matmuls and
        attention are float32, the int8 kernels' own input and output dtype, so no conversion surrounds each
        matmul. int8 needs `calibration`, token ids (the declarations prefix) run through each
        layer in `dtype` as it is built: their largest activation per channel sets SmoothQuant scales, folded
        exactly into the preceding norm, up or value projection, before the layer's weights are quantised.
        Use `from_module` or `from_checkpoint`.
        """
        if quantize not in (None, *QUANTIZATIONS):
            raise ValueError(f"unknown quantization {quantize!r}; use {' or '.join(QUANTIZATIONS)} or none")
        if quantize and not calibration:
            raise ValueError("int8 needs calibration token ids (the declarations prefix)")
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.groups = self.n_heads // self.n_kv  # query heads per key/value head
        self.head_dim, self.eps = cfg.head_dim, cfg.rms_norm_eps
        self.scaling = cfg.query_pre_attn_scalar ** -0.5
        self.dtype = self.act = dtype  # weights / hidden states between matmuls (float32 with int8, below)
        self.attn = dtype  # attention's matmuls (float32 with int8, below)
        self.embed = embedding
        self.embed_scale = embed_scale
        self.intermediate = cfg.intermediate_size
        rope = _rope_thetas(cfg)
        pack = quantize is None and can_pack(dtype)

        def w(name: str) -> torch.Tensor:
            return tensor(name).detach().to(dtype)

        if quantize:
            x = self._embed(torch.tensor([calibration], dtype=torch.long))
            geometry = _Geometry(0, x.shape[1], dtype, self.groups)
        self.layers: list[Layer] = []
        for i in range(cfg.num_hidden_layers):
            a, m = f"layers.{i}.self_attn.", f"layers.{i}.mlp."
            kind = cfg.layer_types[i]
            inv_freq = 1.0 / (rope[kind] ** (torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim))
            layer = Layer(
                qkv=Linear(torch.cat([w(a + "q_proj.weight"), w(a + "k_proj.weight"), w(a + "v_proj.weight")]), pack),
                o=Linear(w(a + "o_proj.weight"), pack),
                gate_up=Linear(torch.cat([w(m + "gate_proj.weight"), w(m + "up_proj.weight")]), pack),
                down=Linear(w(m + "down_proj.weight"), pack),
                input_norm=_norm_weight(tensor(f"layers.{i}.input_layernorm.weight")),
                post_attn_norm=_norm_weight(tensor(f"layers.{i}.post_attention_layernorm.weight")),
                pre_ff_norm=_norm_weight(tensor(f"layers.{i}.pre_feedforward_layernorm.weight")),
                post_ff_norm=_norm_weight(tensor(f"layers.{i}.post_feedforward_layernorm.weight")),
                qk_norm=torch.cat([_norm_weight(tensor(a + "q_norm.weight")).expand(self.n_heads, -1) * self.scaling,
                                   _norm_weight(tensor(a + "k_norm.weight")).expand(self.n_kv, -1)]),
                inv_freq=inv_freq, window=cfg.sliding_window if kind == "sliding_attention" else None)
            if quantize:
                x = self._quantize_layer(layer, x, geometry)
            self.layers.append(layer)
        self.final_norm = _norm_weight(tensor("norm.weight"))
        if quantize:
            # the int8 kernels take and give float32; attention too, once calibrated: oneDNN compiles and keeps
            # a kernel for every shape of a bf16 matmul (a batch's rows x length: ~65 MB over 2,048 messages in
            # batches, scripts/memory_profile.py), float32 matmuls need none and were as fast here
            self.act = self.attn = torch.float32

    def _quantize_layer(self, layer: Layer, x: torch.Tensor, geometry: _Geometry) -> torch.Tensor:
        """Run the calibration hidden states `x` through `layer` (in `dtype`), smooth and quantise its four
        weight matmuls in place, and return the layer's output for the next one."""
        names = ("qkv", "o", "gate_up", "down")
        for n in names:
            setattr(layer, n, _AbsMax(getattr(layer, n)))
        out, _ = self._layer(layer, x, None, *geometry.of(layer))
        peaks = {}
        for n in names:
            recorder = getattr(layer, n)
            setattr(layer, n, recorder.linear)
            peaks[n] = recorder.peak
        for n, weight in self.smooth(layer, peaks).items():
            setattr(layer, n, Int8Linear(weight))
        return out

    def smooth(self, layer: Layer, peaks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """SmoothQuant for one layer: given the largest |input| per channel of its matmuls (`peaks` by name),
        divide each input channel by s and multiply the matching weight column by s, folding 1/s exactly
        into what produces the input. Updates the layer's norm weights in place and returns the new float32
        weights of qkv, o, gate_up and down (the layer's own matmuls are left as they were)."""
        wt = {n: getattr(layer, n).weight.to(torch.float32, copy=True) for n in peaks}
        # q/k/v and gate/up read normed inputs: fold 1/s into the norm's (1 + w)
        s = _smooth_scale(peaks["qkv"], _column_peak(wt["qkv"]))
        layer.input_norm, wt["qkv"] = layer.input_norm / s, wt["qkv"] * s
        s = _smooth_scale(peaks["gate_up"], _column_peak(wt["gate_up"]))
        layer.pre_ff_norm, wt["gate_up"] = layer.pre_ff_norm / s, wt["gate_up"] * s
        # down reads gelu(gate) * up: fold 1/s into the up rows
        s = _smooth_scale(peaks["down"], _column_peak(wt["down"]))
        wt["gate_up"][self.intermediate:] /= s[:, None]
        wt["down"] = wt["down"] * s
        # o reads attention-weighted values: fold 1/s into the value rows, one scale per value channel,
        # shared by the query heads that read that key/value head
        g, hd = self.groups, self.head_dim
        s = _smooth_scale(peaks["o"].view(self.n_kv, g, hd).amax(dim=1),
                          _column_peak(wt["o"]).view(self.n_kv, g, hd).amax(dim=1))  # [n_kv, hd]
        wt["qkv"][(self.n_heads + self.n_kv) * hd:] /= s.reshape(-1)[:, None]
        wt["o"] = wt["o"] * s[:, None, :].expand(self.n_kv, g, hd).reshape(-1)
        return wt

    @classmethod
    def from_module(cls, decoder, embedding: torch.Tensor | None = None, quantize: str | None = None,
                    calibration: list[int] | None = None) -> SuffixDecoder:
        """From a (merged) Hugging Face `Gemma3TextModel`; `embedding` may replace its embedding table."""
        params = dict(decoder.named_parameters())
        emb = decoder.embed_tokens
        scale = float(getattr(emb, "scalar_embed_scale", math.sqrt(decoder.config.hidden_size)))
        return cls(decoder.config, params.__getitem__, emb.weight.detach() if embedding is None else embedding,
                   scale, emb.weight.dtype, quantize, calibration)

    @classmethod
    def from_checkpoint(cls, cfg, tensor: Callable[[str], torch.Tensor], embedding: torch.Tensor,
                        dtype: torch.dtype, quantize: str | None = None,
                        calibration: list[int] | None = None) -> SuffixDecoder:
        """From checkpoint weights read one at a time (no Hugging Face model is ever built)."""
        return cls(cfg, tensor, embedding, math.sqrt(cfg.hidden_size), dtype, quantize, calibration)

    # ------------------------------------------------------------------------------------------------
    def encode_prefix(self, ids: list[int]) -> PrefixCache:
        """Keys/values of every layer for the shared prefix (run once)."""
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long)
            _, cache = self._run(x, None, want_cache=True)
        return cache

    def hidden_at(self, ids: torch.Tensor, prefix: PrefixCache, rows: torch.Tensor, cols: torch.Tensor,
                  lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states at (rows, cols) of right-padded suffixes `ids` [B, L] run on `prefix`.

        `lengths` [B]: the real tokens of each row; the rest is padding, which then costs only attention
        (no norm, matmul or MLP runs on it). None: every row is L tokens long."""
        with torch.inference_mode():
            B, L = ids.shape
            packing = None if lengths is None or bool((lengths >= L).all()) else _Packing(lengths, B, L)
            h, _ = self._run(ids, prefix, want_cache=False, only=rows * L + cols, packing=packing)
        return h

    # ------------------------------------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed[ids].to(self.act) * torch.tensor(self.embed_scale, dtype=self.dtype)

    def _run(self, ids: torch.Tensor, prefix: PrefixCache | None, want_cache: bool,
             only: torch.Tensor | None = None, packing: _Packing | None = None):
        """The decoder over suffixes `ids` [B, L]; with `only` (flat indices into B * L) the final hidden states
        of just those positions [n, hidden], else of all [B, L, hidden]."""
        B, L = ids.shape
        P = 0 if prefix is None else prefix[0][1].shape[1]  # values: [n_kv, P, hd]
        x = self._embed(ids if packing is None else ids.reshape(-1)[packing.sel])
        if packing is not None and only is not None:
            only = packing.index[only]
        geometry = _Geometry(P, L, self.act, self.groups)
        cache: PrefixCache = []
        for li, layer in enumerate(self.layers):
            last = li == len(self.layers) - 1
            x, kv = self._layer(layer, x, None if prefix is None else prefix[li], *geometry.of(layer),
                                only if last else None, packing)
            if want_cache:  # batch of one (the prefix): keys stored transposed for the suffix matmul
                cache.append((kv[0][0].transpose(-1, -2).contiguous(), kv[1][0].contiguous()))
        return _rms(x, self.final_norm, self.eps), cache

    def _layer(self, w: Layer, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None,
               mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, only: torch.Tensor | None = None,
               packing: _Packing | None = None):
        """One decoder layer on x [B, L, hidden], or on the real tokens [N, hidden] given `packing`; `only`:
        flat token indices to keep after attention (the last layer: the rest is per token).

        Attention and MLP are separate calls so that each one's temporaries are freed when it returns: a
        batch's working memory is the larger of the two, not their sum (~3x less per token)."""
        out, kv = self._attention(w, _rms(x, w.input_norm, self.eps), prefix, mask, cos, sin, packing)
        if only is not None:  # last layer: the rest is per token, so keep just the tokens asked for
            x, out = x.reshape(-1, x.shape[-1])[only], out.reshape(-1, out.shape[-1])[only]
        x = x + _rms(w.o(out), w.post_attn_norm, self.eps)
        del out
        x = x + _rms(self._mlp(w, _rms(x, w.pre_ff_norm, self.eps)), w.post_ff_norm, self.eps)
        return x, kv

    def _attention(self, w: Layer, h: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None,
                   mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, packing: _Packing | None):
        """Self-attention of the normed hidden states `h` (on the prefix, when given): the heads' output
        before the o projection, in `h`'s layout, and this call's keys and values [B, n_kv, L, hd]."""
        nh, nkv, hd, g = self.n_heads, self.n_kv, self.head_dim, self.groups
        qkv = w.qkv(h)
        del h
        if packing is not None:
            qkv = packing.pad(qkv)
        B, L, _ = qkv.shape
        # queries and keys normed and rotated together (each head over its own head_dim), fewer small ops
        qk = qkv[..., : (nh + nkv) * hd].view(B, L, nh + nkv, hd)
        qk = (F.rms_norm(qk.float(), (hd,), None, self.eps) * w.qk_norm).to(qk.dtype)
        qk = _rope(qk, cos[:, None], sin[:, None]).to(self.attn)
        q, k = qk[:, :, :nh], qk[:, :, nh:]
        v = qkv[..., (nh + nkv) * hd:].view(B, L, nkv, hd).to(self.attn)
        # queries grouped under their key/value head: [B, n_kv, g * L, hd], no copy of keys/values per head
        q = q.view(B, L, nkv, g, hd).permute(0, 2, 3, 1, 4).reshape(B, nkv, g * L, hd)
        k = k.transpose(1, 2)  # [B, n_kv, L, hd]
        v = v.transpose(1, 2)
        scores = q @ k.transpose(-1, -2)  # [B, n_kv, gL, L], already scaled (in q_norm)
        if prefix is not None:
            pk_t, pv = prefix  # shared by the whole batch: one matmul for every row; keys stored transposed
            sp = q.transpose(0, 1).reshape(nkv, B * g * L, hd) @ pk_t
            scores = torch.cat([sp.view(nkv, B, g * L, -1).transpose(0, 1), scores], dim=-1)
            del sp
        # scores in the attention dtype and softmax in float32, as the Hugging Face eager attention does
        probs = torch.softmax(scores.add_(mask), dim=-1, dtype=torch.float32).to(self.attn)
        del scores, q
        P = probs.shape[-1] - L
        out = probs[..., P:] @ v
        if prefix is not None:
            pp = probs[..., :P].transpose(0, 1).reshape(nkv, B * g * L, P)
            out = out + (pp @ pv).view(nkv, B, g * L, hd).transpose(0, 1)
        del probs
        out = out.view(B, nkv, g, L, hd).permute(0, 3, 1, 2, 4).reshape(B, L, nh * hd).to(self.act)
        if packing is not None:
            out = packing.pack(out)
        return out, (k, v)

    def _mlp(self, w: Layer, h: torch.Tensor) -> torch.Tensor:
        """Gemma's gated MLP on the normed hidden states `h`: down(gelu_tanh(gate) * up)."""
        gu = w.gate_up(h)
        del h
        act = F.gelu(gu[..., : self.intermediate], approximate="tanh").mul_(gu[..., self.intermediate:])
        del gu
        return w.down(act)


def _norm_weight(weight: torch.Tensor) -> torch.Tensor:
    return 1.0 + weight.detach().float()


def _rope_thetas(cfg) -> dict[str, float]:
    """RoPE base per layer type (transformers 5 `rope_parameters`, or the older flat fields)."""
    params = getattr(cfg, "rope_parameters", None)
    if isinstance(params, dict) and "full_attention" in params:
        out = {}
        for kind, p in params.items():
            if p.get("rope_type", "default") != "default":
                raise ValueError(f"rope type {p['rope_type']!r} is not supported by the lean runtime")
            out[kind] = float(p["rope_theta"])
        return out
    return {"full_attention": float(cfg.rope_theta), "sliding_attention": float(cfg.rope_local_base_freq)}


def _mask(P: int, L: int, window: int | None) -> torch.Tensor:
    """Additive mask [L, P + L]: causal over the suffix, and the sliding window over everything."""
    q = torch.arange(P, P + L)[:, None]
    kv = torch.arange(P + L)[None, :]
    visible = kv <= q
    if window is not None:
        visible &= (q - kv) < window
    return torch.where(visible, 0.0, float("-inf"))
