"""The fine-tuned router: base Gemma 3 270M + a LoRA adapter, one forward pass per message on a cached prefix."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch

from .agents import Agent, Registry
from .errors import ShopRouterError
from .model import LORA_LAYERS, Checkpoint, release_freed_memory
from .router import DEFAULT_CLARIFY_THRESHOLD, Router
from .rows import Turn
from .runtime import QUANTIZATIONS

META_FILE = "router.json"  # registry, prompt format, calibration: written next to the adapter weights
# Where attention runs in bf16 (the bf16 router, the transformers forward), a single message's suffix, and
# in the lean runtime every batch, is right-padded to a multiple of this many tokens: oneDNN keeps compiled
# kernels and buffers for every input shape of a bf16 matmul, so a long-running router otherwise grows by
# ~250 MB over its first few hundred message lengths, and without padded batches by ~370 MB over 2,048
# test-split messages in batches of 32 (`python scripts/memory_profile.py [--quantize none] [--pad-to 1]`).
# 8 rather than 16: fewer padding tokens per message (single-message p50 -7 % in an ad-hoc A/B) for ~10-30 MB
# more kernels. Where attention runs in float32 (the default int8 router) no kernel is kept per shape, so
# nothing is padded (PAD_TO_FLOAT32): in an interleaved A/B in one process, single messages took 46.1 ms
# against 48.9 padded to 8 (medians of 4 x 60 realistic messages, a slow stretch of this VM), and 400
# messages left the router at 452 MB against 449.
PAD_TO = 8
PAD_TO_FLOAT32 = 1

# route_batch runs a batch in forwards of at most this many suffix tokens (rows x longest row). A forward's
# working memory grows with its tokens (activations, and the heap they leave behind until the batch ends):
# 32 long messages at once took the router from ~440 to ~600 MB. Peak over 2,048 messages in batches of 32
# (`python scripts/memory_profile.py --batch-size 32 --messages 2048 [--data gen/test.jsonl] --batch-tokens N`),
# test split / realistic set, suffixes padded to 8: no cap 560 / 598, 256 tokens ~519 / 527, 160: 499 / 495,
# 128: 483 / 489, 96: 475 / 476 (128 unpadded: 475 on the test split, the load's own peak). Throughput on
# ~20-token messages (one process, medians of 5 passes): 1 message 34 msgs/s, 6 at once 61, 8 62.5, 16 65,
# 32 70; in `bench`, forwards of 128 tokens cost ~10-25 % of batched throughput (README, Speed and memory).
BATCH_TOKENS = 128
PROMPT_VERSION = 3  # 2: function markers as single reserved tokens (prompt.marker_ids); 3: compact answer turns


def default_pad_to(engine) -> int:
    """The padding multiple a router on `engine` uses unless told otherwise (see PAD_TO)."""
    return PAD_TO_FLOAT32 if engine.attention_dtype == torch.float32 else PAD_TO


def shipped_adapter() -> Path:
    """The adapter that ships inside the package."""
    return Path(str(files("shoprouter").joinpath("adapter")))


def read_meta(adapter: Path) -> dict:
    """Read and check an adapter directory's metadata."""
    meta_path = adapter / META_FILE
    weights = adapter / "adapter_model.safetensors"
    if not adapter.is_dir() or not weights.is_file() or not meta_path.is_file():
        raise ShopRouterError(f"no trained adapter at {adapter} (needs adapter_model.safetensors and {META_FILE}); "
                              "train one with `shoprouter train` or pass --adapter")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ShopRouterError(f"adapter metadata {meta_path} is corrupted") from None
    if meta.get("prompt_version") != PROMPT_VERSION:
        raise ShopRouterError(f"adapter {adapter} was trained for prompt format {meta.get('prompt_version')}, "
                              f"this shoprouter uses {PROMPT_VERSION}")
    return meta


def adapter_error(adapter: Path, exc: Exception) -> ShopRouterError:
    """The one-line error for an adapter file that cannot be read: the cause's first line, with its type unless
    it is already one of ours."""
    what = str(exc) if isinstance(exc, ShopRouterError) else f"{type(exc).__name__}: {exc}"
    return ShopRouterError(f"cannot load adapter {adapter}: {what.splitlines()[0][:200] if what else ''}")


def registry_from_meta(meta: dict) -> Registry:
    """The agent registry recorded in an adapter's metadata (or a training log), ShopRouterError if it has none."""
    try:
        return Registry(tuple(Agent(a["key"], a["description"], tuple(a.get("keywords", ())))
                              for a in meta["agents"]))
    except (KeyError, TypeError):
        raise ShopRouterError("adapter metadata has no valid agent registry ('agents')") from None


def adapter_registry(adapter: str | Path | None = None) -> Registry:
    """The agents `adapter` (default: the shipped one) was trained on, from its router.json (no model loaded)."""
    return registry_from_meta(read_meta(Path(adapter) if adapter else shipped_adapter()))


def check_registry(adapter: Path, trained: Registry, registry: Registry | None) -> Registry:
    """The registry to route `adapter` with: the one it was trained on (`router.json`). A `registry` given as
    well must declare the same agents with the same descriptions (they are part of the prompt), else
    ShopRouterError."""
    if registry is None:
        return trained
    if trained.keys != registry.keys:
        raise ShopRouterError(f"adapter {adapter} was trained for agents {trained.keys}, "
                              f"but the registry has {registry.keys}")
    changed = [a.key for a, b in zip(trained.agents, registry.agents, strict=True) if a.description != b.description]
    if changed:
        raise ShopRouterError(f"adapter {adapter} was trained with other descriptions of {', '.join(changed)} "
                              "(they are part of the prompt): route with the adapter's own registry")
    return registry


def load_adapted_model(base: str | None, adapter: Path, merge: bool = True, dtype: str = "float32"):
    """Base model + LoRA adapter weights (merged into the base for inference speed), in `dtype`."""
    from peft import PeftModel

    from .model import load_base

    loaded = load_base(base, dtype=dtype)
    try:
        model = PeftModel.from_pretrained(loaded.model, str(adapter), is_trainable=False)
    except Exception as exc:  # safetensors / peft raise many types for a damaged file
        raise adapter_error(adapter, exc) from None
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, loaded.tokenizer


_LORA_KEY = re.compile(r"^base_model\.model\.model\.(layers\.\d+\.(?:self_attn|mlp)\.(\w+))\.lora_([AB])\.weight$")


class AdapterFactors(Mapping[str, tuple[torch.Tensor, torch.Tensor]]):
    """An adapter file's LoRA factors by decoder weight name, each pair read from the file when looked up, so
    that building a router holds one layer's factors at a time rather than the whole adapter (30 MB at
    rank 32, which would add to the load's peak)."""

    def __init__(self, adapter: Path, ckpt: Checkpoint, keys: dict[str, tuple[str, str]]):
        self._adapter, self._ckpt, self._keys = adapter, ckpt, keys

    def __getitem__(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        key_a, key_b = self._keys[name]
        try:
            return self._ckpt.get(key_a), self._ckpt.get(key_b)
        except Exception as exc:  # a truncated file or a damaged header entry
            raise adapter_error(self._adapter, exc) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class LoraWeights:
    """A plain LoRA adapter: per decoder weight name, the low-rank factors and the scale of B @ A."""

    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (A [r, in], B [out, r])
    scale: float
    rank: int  # r, the rows of every A

    def merged(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """`weight` with its LoRA update added (in float32, then back to its dtype, as PEFT's merge does)."""
        if name not in self.factors:
            return weight
        a, b = self.factors[name]
        if b.shape[0] != weight.shape[0] or a.shape[1] != weight.shape[1]:
            raise ShopRouterError(f"the adapter's {name} is {b.shape[0]}x{a.shape[1]} but the base model's is "
                                  f"{weight.shape[0]}x{weight.shape[1]}: the adapter was trained on another base")
        return (weight.float() + self.scale * (b.float() @ a.float())).to(weight.dtype)


def read_lora(adapter: Path) -> LoraWeights | None:
    """The adapter's LoRA factors, or None when it uses a PEFT feature only PEFT's own merge handles
    (DoRA, biases, per-module ranks, trained embeddings, other target modules)."""
    try:
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # the PEFT loader reports what is wrong with it
    plain = (cfg.get("peft_type") == "LORA" and cfg.get("bias", "none") == "none"
             and not any(cfg.get(k) for k in ("use_dora", "lora_bias", "modules_to_save", "rank_pattern",
                                              "alpha_pattern", "fan_in_fan_out", "trainable_token_indices",
                                              "layer_replication", "layers_to_transform"))
             and isinstance(cfg.get("target_modules"), list) and set(cfg["target_modules"]) <= set(LORA_LAYERS))
    if not plain:
        return None
    try:  # the header only: the factors are read when merged (AdapterFactors)
        ckpt = Checkpoint(adapter, "adapter_model.safetensors")
    except Exception as exc:  # a damaged header raises several types
        raise adapter_error(adapter, exc) from None
    parts: dict[str, dict[str, str]] = {}
    for key in ckpt.names():
        m = _LORA_KEY.match(key)
        if m is None or m.group(2) not in LORA_LAYERS:
            return None
        parts.setdefault(m.group(1) + ".weight", {})[m.group(3)] = key
    if not parts or any(set(v) != {"A", "B"} for v in parts.values()):
        return None
    r = int(cfg["r"])
    scale = float(cfg["lora_alpha"]) / (math.sqrt(r) if cfg.get("use_rslora") else r)
    return LoraWeights(AdapterFactors(adapter, ckpt, {k: (v["A"], v["B"]) for k, v in parts.items()}), scale, r)


def lean_runtime(where: Path, lora: LoraWeights, dtype: str, quantize: str | None = None,
                 calibration: list[int] | None = None):
    """The lean forward (runtime.SuffixDecoder) built straight from the base checkpoint with the LoRA update
    merged, and the output head; no Hugging Face model is built. None when the checkpoint is not a Gemma 3
    text model in local safetensors files. `calibration`: token ids that int8 calibrates on (the prefix)."""
    from transformers import AutoConfig

    from .runtime import SuffixDecoder

    ckpt = Checkpoint(where)
    prefix = "model." if "model.norm.weight" in ckpt else ""
    if prefix + "norm.weight" not in ckpt:  # no local safetensors of a Gemma 3 text model
        return None
    try:
        cfg = AutoConfig.from_pretrained(str(where), local_files_only=True)
    except (OSError, ValueError):
        return None
    if cfg.model_type != "gemma3_text":
        return None
    torch_dtype = getattr(torch, dtype)

    def tensor(name: str) -> torch.Tensor:
        return lora.merged(name, ckpt.get(prefix + name).to(torch_dtype))

    embedding = ckpt.rows(prefix + "embed_tokens.weight")
    if embedding is None:
        embedding = ckpt.get(prefix + "embed_tokens.weight").to(torch_dtype)
    tied = getattr(cfg, "tie_word_embeddings", True) or "lm_head.weight" not in ckpt
    head = embedding if tied else ckpt.get("lm_head.weight")
    return SuffixDecoder.from_checkpoint(cfg, tensor, embedding, torch_dtype, quantize, calibration), head


class Int8Embedding(torch.nn.Module):
    """Token embedding stored as int8 with one scale per row (4x smaller); same output as the scaled embedding."""

    def __init__(self, emb: torch.nn.Embedding):
        super().__init__()
        w = emb.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.register_buffer("q", torch.round(w / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale)
        self.embed_scale = float(getattr(emb, "scalar_embed_scale", 1.0))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.q[input_ids].float() * (self.scale[input_ids] * self.embed_scale).unsqueeze(-1)


def _check_quantize(quantize: str | None) -> None:
    if quantize not in (None, *QUANTIZATIONS):
        raise ShopRouterError(f"unknown quantization {quantize!r}; use {' or '.join(map(repr, QUANTIZATIONS))}, "
                              "'auto' or none")


def resolve_quantize(quantize: str | None, forward: str) -> str | None:
    """`'auto'` (the default): int8 in the lean forward where PyTorch has its x86 int8 kernels (fbgemm),
    else none (bf16/float); other values are checked and returned."""
    if quantize == "auto":
        return "int8" if forward == "lean" and "fbgemm" in torch.backends.quantized.supported_engines else None
    _check_quantize(quantize)
    return quantize


def compact_for_inference(engine, quantize: str | None) -> None:
    """Shrink a merged model for routing: candidate head rows only; with quantize='int8' also an int8
    embedding table and dynamically quantised int8 linear layers."""
    engine.freeze_head()
    model = engine.model
    if quantize is None:
        return
    _check_quantize(quantize)
    body = model.model
    body.embed_tokens = Int8Embedding(body.embed_tokens)
    model.lm_head = torch.nn.Identity()  # tied to the old embedding; only the frozen candidate rows are used
    torch.ao.quantization.quantize_dynamic(body, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    engine.clear_cache()


def _embedding_rows(base: str | None, dtype: str):
    """The base model's token embeddings read from its local safetensors files on lookup (None if remote)."""
    from .model import embedding_rows, resolve_base

    where = resolve_base(base, dtype)
    return embedding_rows(where, "model.embed_tokens.weight") if isinstance(where, Path) else None


def length_buckets(lengths: Sequence[int], max_size: int, slack: float = 1.25,
                   max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped by similar length (at most max_size each), so padding stays small in a batch.

    `max_tokens`: a bucket also closes before its size times its longest length would pass this many tokens,
    so that long messages go in smaller batches and a forward's working memory stays bounded (a single
    message longer than that is a bucket of its own)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    buckets: list[list[int]] = []
    for i in order:
        if (buckets and len(buckets[-1]) < max_size and lengths[i] <= lengths[buckets[-1][0]] * slack + 4
                and (max_tokens is None or (len(buckets[-1]) + 1) * lengths[i] <= max_tokens)):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


class LoraRouter(Router):
    """Routes with the fine-tuned model: a probability over every declared function from one forward pass.

    `quantize`: `"auto"` (default; int8 weight matmuls in the lean forward on x86, see `resolve_quantize`),
    `"int8"`, or None for the weights in `dtype` (bf16 where the CPU has it, else float32).
    """

    name = "lora"

    def __init__(self, adapter: str | Path | None = None, registry: Registry | None = None, base: str | None = None,
                 clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD, temperature: float | None = None,
                 batch_size: int = 32, threads: int | None = None, quantize: str | None = "auto",
                 dtype: str | None = "auto", forward: str = "lean", pad_to: int | None = None,
                 batch_tokens: int = BATCH_TOKENS):
        from .model import resolve_dtype, unfragmented_loading
        from .scoring import Engine

        adapter = Path(adapter) if adapter else shipped_adapter()
        meta = read_meta(adapter)
        registry = check_registry(adapter, registry_from_meta(meta), registry)
        super().__init__(registry, clarify_threshold)
        if threads:
            torch.set_num_threads(threads)
        self.adapter = adapter
        self.meta = meta
        self.temperature = float(temperature if temperature is not None else meta.get("temperature", 1.0))
        self.batch_size = batch_size
        self.dtype = resolve_dtype(dtype)
        if forward not in ("lean", "hf"):
            raise ShopRouterError(f"unknown forward {forward!r}; use 'lean' (runtime.py) or 'hf' (transformers)")
        if pad_to is not None and (not isinstance(pad_to, int) or not 1 <= pad_to <= 64):
            raise ShopRouterError(f"pad_to must be a whole number from 1 to 64, got {pad_to!r}")
        if not isinstance(batch_tokens, int) or isinstance(batch_tokens, bool) or batch_tokens < 1:
            raise ShopRouterError(f"batch_tokens must be a whole number of at least 1, got {batch_tokens!r}")
        self.batch_tokens = batch_tokens
        quantize = resolve_quantize(quantize, forward)
        self.quantize = quantize
        self.forward = forward
        base = base or meta.get("base")
        with unfragmented_loading():  # then glibc hands back what loading, calibrating and the prefix pass freed
            self.engine = self._lean_engine(base, adapter, registry, quantize) if self.forward == "lean" else None
            if self.engine is None:  # through transformers + PEFT (and then, for "lean", to runtime.py)
                model, tokenizer = load_adapted_model(base, adapter, dtype=self.dtype)
                self.engine = Engine(model, tokenizer, registry)
                if self.forward == "lean":
                    compact_for_inference(self.engine, None)
                    self.engine.use_runtime(_embedding_rows(base, self.dtype), quantize)
                else:  # int8 in the transformers forward: torch.ao dynamic quantisation of its linear layers
                    compact_for_inference(self.engine, quantize)
            self.engine.pad_multiple = default_pad_to(self.engine) if pad_to is None else pad_to
            self.engine.prefix_cache()  # encode the declarations once, now

    def _lean_engine(self, base: str | None, adapter: Path, registry: Registry, quantize: str | None = None):
        """An engine on the lean forward built straight from the checkpoint files (None when the base or the
        adapter needs the transformers/PEFT loader): the full model is never materialised, so loading is
        faster and peaks lower."""
        from .model import load_fast_tokenizer, release_freed_memory, resolve_base
        from .scoring import Engine

        where = resolve_base(base, self.dtype)
        lora = read_lora(adapter) if isinstance(where, Path) else None
        if lora is None:
            return None
        engine = Engine(None, load_fast_tokenizer(where), registry)
        built = lean_runtime(where, lora, self.dtype, quantize, engine.prefix_ids)
        if built is None:
            return None
        engine.set_runtime(*built)
        release_freed_memory()
        return engine

    def log_probs(self, texts: Sequence[str], histories: Sequence[Sequence[Turn]]) -> torch.Tensor:
        """Log-probability of every label for each message at the router's temperature, [n, n_labels]: length
        buckets of at most `batch_size` messages and `batch_tokens` suffix tokens, one forward each."""
        encoded = [self.engine.encode(t, h) for t, h in zip(texts, histories, strict=True)]
        out = torch.empty(len(encoded), len(self.engine.tree.labels))
        for chunk in length_buckets([len(e.ids) for e in encoded], self.batch_size, max_tokens=self.batch_tokens):
            out[chunk] = self.engine.log_probs([encoded[i] for i in chunk], self.temperature)
        if len(encoded) > 1:
            # a batch's activations are tens of MB, freed all over the heap, which glibc keeps: ~+150 MB over
            # 2,048 messages in batches of 32, otherwise (scripts/memory_profile.py --batch-size 32)
            release_freed_memory()
        return out

    def scores_batch(self, texts: Sequence[str], histories: Sequence[Sequence[Turn]]) -> list[dict[str, float]]:
        labels = self.engine.tree.labels
        return [dict(zip(labels, row, strict=True)) for row in self.log_probs(texts, histories).exp().tolist()]
