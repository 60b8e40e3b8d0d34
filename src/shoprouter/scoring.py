"""Scoring engine shared by training and routing.

Tokenises the shared prefix and per-message suffixes, encodes the prefix once into a key/value cache,
runs a batch of suffixes on top of that cache, and reads the model's next-token distribution at the
*decision points*: the positions inside the function names where the declared candidates diverge (for the
default registry: right after `<start_function_call>` — route / ask / decline — and right after `route_to_`
— which agent). Only the output-head rows that are needed are ever multiplied.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import prompt
from .agents import Registry
from .rows import Turn


@dataclass(frozen=True)
class DecisionPoint:
    """A place in the function-name token tree where candidates branch."""

    path: tuple[int, ...]  # name tokens already emitted at this point
    children: tuple[int, ...]  # distinct next tokens among the candidates


@dataclass
class CandidateTree:
    """Function-name tokens of every decision label, and where they branch."""

    labels: list[str]
    paths: list[tuple[int, ...]]
    points: list[DecisionPoint]
    probes: list[tuple[int, ...]]  # token sequences to append to a suffix so every point is visible

    def steps(self, label_index: int) -> list[tuple[int, int]]:
        """(decision point index, child index) along a label's path."""
        path = self.paths[label_index]
        out = []
        for i, point in enumerate(self.points):
            n = len(point.path)
            if n < len(path) and path[:n] == point.path:
                out.append((i, point.children.index(path[n])))
        return out


def build_tree(registry: Registry, tokenizer) -> CandidateTree:
    """Tokenise every declared function name and find its decision points."""
    labels = registry.labels
    paths = [tuple(tokenizer.encode(prompt.function_name(lb, registry), add_special_tokens=False)) for lb in labels]
    if len(set(paths)) != len(paths):
        raise ValueError("two declared functions tokenise identically")
    points = []
    seen: set[tuple[int, ...]] = set()
    for path in paths:
        for n in range(len(path)):
            node = path[:n]
            if node in seen:
                continue
            seen.add(node)
            kids = tuple(sorted({p[n] for p in paths if len(p) > n and p[:n] == node}))
            if len(kids) > 1:
                points.append(DecisionPoint(node, kids))
    for path in paths:  # a name that is a prefix of another would have no distinct next token
        if any(other != path and other[: len(path)] == path for other in paths):
            raise ValueError("a declared function name is a token prefix of another")
    nodes = [p.path for p in points]
    probes = [n for n in nodes if not any(len(m) > len(n) and m[: len(n)] == n for m in nodes)]
    return CandidateTree(labels, paths, points, probes)


@dataclass
class Encoded:
    """One message's token ids (suffix only) and, for training, its target label index."""

    ids: list[int]
    label: int | None = None


class Engine:
    """Prefix cache + batched suffix scoring for one model/tokenizer/registry."""

    def __init__(self, model, tokenizer, registry: Registry, max_suffix_tokens: int = 384):
        self.model = model
        self.tokenizer = tokenizer
        self.registry = registry
        self.max_suffix_tokens = max_suffix_tokens
        self.tree = build_tree(registry, tokenizer)
        self.prefix_ids = [tokenizer.bos_token_id] + self._encode_template(
            prompt.prefix_text(registry).removeprefix(prompt.BOS))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._prefix_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._head_rows: torch.Tensor | None = None  # candidate rows of the output head, once frozen
        self._runtime = None  # the lean inference forward (runtime.SuffixDecoder), once switched to it
        self._child_pos: dict[int, int] = {}
        self.pad_multiple = 1  # a single suffix is padded to a multiple of this many tokens (fewer distinct shapes)

    # ---- tokens -------------------------------------------------------------------------------
    def encode(self, text: str, history: Sequence[Turn] | None = None, label: str | None = None) -> Encoded:
        """Suffix token ids of a message; user text is sanitised and tokenised with special tokens split."""
        parts = prompt.suffix_text(text, history, self.registry)
        # control markers come only from the template: split it around the (sanitised) user text
        ids = self._encode_template(parts)
        ids = ids[-self.max_suffix_tokens:]
        return Encoded(ids, None if label is None else self.tree.labels.index(label))

    def _encode_template(self, text: str) -> list[int]:
        """Tokenise template text: markers become their special ids, everything else is split as plain text."""
        tok = self.tokenizer
        out: list[int] = []
        for piece, is_marker in prompt.split_markers(text):
            if is_marker:
                out.extend(prompt.marker_ids(piece, tok))
            else:
                out.extend(tok.encode(piece, add_special_tokens=False, split_special_tokens=True))
        return out

    # ---- model --------------------------------------------------------------------------------
    @property
    def attention_dtype(self) -> torch.dtype:
        """The dtype attention's matmuls run in (the lean runtime's, else the model's)."""
        if self._runtime is not None:
            return self._runtime.attn
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self._runtime is not None else next(self.model.parameters()).device

    def use_runtime(self, embedding: torch.Tensor | None = None, quantize: str | None = None) -> None:
        """Route with the lean inference forward (runtime.py) from now on; the HF model is then dropped.

        Inference only: call it on a merged model. Keeps only the candidate rows of the output head.
        `embedding`: an equal token-embedding table held elsewhere (`model.FileRows`), checked on the prefix rows.
        `quantize="int8"`: int8 weight matmuls (runtime.Int8Linear), calibrated on the declarations prefix.
        """
        from .runtime import SuffixDecoder

        if embedding is not None:
            ids = torch.tensor(self.prefix_ids)
            own = self._decoder().embed_tokens.weight[ids].float()
            if embedding.shape != self._decoder().embed_tokens.weight.shape or not torch.allclose(
                    embedding[ids].float(), own, rtol=1e-2, atol=1e-3):
                embedding = None  # e.g. an adapter that trained token embeddings: keep the model's own
        head = self._head() if self._head_rows is None else None
        self.set_runtime(SuffixDecoder.from_module(self._decoder(), embedding, quantize, self.prefix_ids), head)

    def set_runtime(self, runtime, head: torch.Tensor | None) -> None:
        """Route with a lean forward (runtime.SuffixDecoder) and the output head `head` [vocab, hidden]
        (only its candidate rows are kept; None when they are already kept). No HF model is used after this."""
        if head is not None:
            self.freeze_head(head, runtime.dtype)
        self._runtime = runtime
        self._prefix_cache = None
        self.model = None

    def _decoder(self):
        """The transformer body (no output head), through any PEFT wrapper."""
        m = self.model
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()
        return m.model

    def _head(self) -> torch.Tensor:
        m = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return m.lm_head.weight

    def freeze_head(self, head: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> None:
        """Keep only the output-head rows of the candidate tokens (inference); the full head can then go.

        `head`: the output head [vocab, hidden] when there is no HF model to take it from (its rows are
        rounded to `dtype` first, as the model computing in that dtype would hold them)."""
        kids = sorted({c for p in self.tree.points for c in p.children})
        self._child_pos = {c: i for i, c in enumerate(kids)}
        rows = (self._head() if head is None else head)[kids].detach()
        self._head_rows = (rows if dtype is None else rows.to(dtype)).float().clone()

    def _candidate_rows(self, kids: Sequence[int]) -> torch.Tensor:
        if self._head_rows is not None:
            return self._head_rows[[self._child_pos[c] for c in kids]]
        return self._head()[list(kids)]

    def encode_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run the shared prefix once; its keys/values per layer (grads flow when enabled)."""
        ids = torch.tensor([self.prefix_ids], device=self.device)
        out = self._decoder()(input_ids=ids, use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values  # transformers 5 renamed it
        return [(layer.keys, layer.values) for layer in cache.layers]

    def prefix_cache(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The prefix keys/values, computed once and kept (inference)."""
        if self._prefix_cache is None:
            if self._runtime is not None:
                self._prefix_cache = self._runtime.encode_prefix(self.prefix_ids)
            else:
                with torch.inference_mode():
                    self._prefix_cache = self.encode_prefix()
        return self._prefix_cache

    def clear_cache(self) -> None:
        self._prefix_cache = None

    def _cache_for(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], batch: int):
        from transformers import DynamicCache

        cache = DynamicCache(config=self._decoder().config)
        for i, (k, v) in enumerate(prefix):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
        return cache

    def hidden_at(self, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                  prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Final hidden states at the given positions of each suffix sequence, run on the prefix cache.

        Sequences are right-padded; causal attention means real tokens never see the padding.
        Returns [sum(len(p) for p in positions), hidden].
        """
        prefix = prefix if prefix is not None else self.prefix_cache()
        width = max(len(s) for s in seqs)
        if len(seqs) == 1 or self._runtime is not None:
            # few distinct shapes: oneDNN compiles and keeps kernels per attention shape. The lean runtime
            # runs norms, matmuls and MLP on the real tokens only, so padding a batch costs attention alone;
            # the transformers forward computes every padded token, so its batches (length-bucketed) are not
            width = -(-width // self.pad_multiple) * self.pad_multiple
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long, device=self.device)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        rows = torch.tensor([i for i, p in enumerate(positions) for _ in p], device=self.device)
        cols = torch.tensor([c for p in positions for c in p], device=self.device)
        if self._runtime is not None:
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
            return self._runtime.hidden_at(ids, prefix, rows, cols, lengths)
        out = self._decoder()(input_ids=ids, use_cache=True,
                              **{_cache_kwarg(type(self._decoder())): self._cache_for(prefix, len(seqs))})
        return out.last_hidden_state[rows, cols]

    # ---- scoring ------------------------------------------------------------------------------
    def _layout(self, encoded: Sequence[Encoded]) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        """Sequences to run (suffix + probe), hidden-state positions in them, and for each message the
        flat row of every decision point (-1 where a point is not on any probe, which cannot happen)."""
        tree = self.tree
        seqs, positions, rows = [], [], []
        flat = 0
        for enc in encoded:
            mine = [-1] * len(tree.points)
            for probe in tree.probes:
                pos = []
                for p_i, point in enumerate(tree.points):
                    n = len(point.path)
                    if mine[p_i] < 0 and probe[:n] == point.path:
                        pos.append(len(enc.ids) + n - 1)
                        mine[p_i] = flat
                        flat += 1
                if pos:
                    seqs.append(list(enc.ids) + list(probe))
                    positions.append(pos)
            rows.append(mine)
        return seqs, positions, rows

    def point_logits(self, encoded: Sequence[Encoded], prefix=None, full_vocab: bool = False):
        """Logits at every decision point of every message.

        Returns (logits, rows): logits is [n_points_total, n_children or vocab] in the flat order of
        `rows[m][p]`. With full_vocab=False only the candidate rows of the output head are used, padded
        with -inf to the widest point.
        """
        seqs, positions, rows = self._layout(encoded)
        h = self.hidden_at(seqs, positions, prefix)
        if full_vocab:
            return h @ self._head().T, rows
        width = max(len(p.children) for p in self.tree.points)
        out = torch.full((h.shape[0], width), float("-inf"), device=h.device)
        for m_rows in rows:
            for p_i, r in enumerate(m_rows):
                kids = self.tree.points[p_i].children
                out[r, : len(kids)] = h[r].float() @ self._candidate_rows(kids).T
        return out, rows

    def label_log_probs(self, point_logits: torch.Tensor, rows: list[list[int]], temperature: float = 1.0) -> torch.Tensor:
        """Log-probability of every label for every message, [B, n_labels], from restricted point logits.

        A label's probability is the product of its branch probabilities along the name's token tree; the
        temperature then scales the label log-probabilities (so it changes the confidence, never the argmax).
        """
        logp = torch.log_softmax(point_logits, dim=-1)
        out = torch.zeros(len(rows), len(self.tree.labels), dtype=logp.dtype, device=logp.device)
        for lb in range(len(self.tree.labels)):
            for p_i, child in self.tree.steps(lb):
                idx = torch.tensor([m_rows[p_i] for m_rows in rows], device=logp.device)
                out[:, lb] += logp[idx, child]
        return torch.log_softmax(out / temperature, dim=-1)

    def log_probs(self, encoded: Sequence[Encoded], temperature: float = 1.0) -> torch.Tensor:
        """Log-probability of every label for every message, [B, n_labels], from one forward pass."""
        with torch.inference_mode():
            logits, rows = self.point_logits(encoded)
            return self.label_log_probs(logits.float(), rows, temperature)

    def score(self, encoded: Sequence[Encoded], temperature: float = 1.0) -> torch.Tensor:
        """Probability of every label for every message, [B, n_labels] (rows sum to 1)."""
        return self.log_probs(encoded, temperature).exp()


@functools.lru_cache(maxsize=8)
def _cache_kwarg(decoder_class: type) -> str:
    """The forward keyword for a key/value cache: `cache` in transformers 5, `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"
