"""The Router interface every router implements, the Decision it returns, and routers by name."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .agents import CLARIFY, NONE, Registry, default_registry
from .errors import InputError
from .rows import Turn, validate_text

ROUTER_NAMES = ("lora", "keyword", "rules", "tfidf", "embedding")
DEFAULT_CLARIFY_THRESHOLD = 0.7


@dataclass
class Decision:
    """What a router decided for one message (the CLI JSON contract, minus latency)."""

    decision: str
    agent: str | None
    function: str | None
    confidence: float
    scores: dict[str, float]
    reason: str = "model"  # model | low_confidence
    latency_ms: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["confidence"] = round(float(self.confidence), 6)
        out["scores"] = {k: round(float(v), 6) for k, v in self.scores.items()}
        if out["latency_ms"] is not None:
            out["latency_ms"] = round(float(out["latency_ms"]), 2)
        return out


def decide(scores: dict[str, float], registry: Registry, clarify_threshold: float) -> Decision:
    """Turn a probability per label into a Decision: the top label, or clarify when it is below threshold.

    `none` and `clarify` chosen by the router stand as they are; an agent whose probability is below
    `clarify_threshold` becomes `clarify` (reason `low_confidence`).
    """
    top = max(scores, key=scores.__getitem__)
    conf = float(scores[top])
    if top not in (CLARIFY, NONE) and conf < clarify_threshold:
        return Decision(CLARIFY, None, None, conf, scores, reason="low_confidence")
    fn = registry.function_of(top)
    return Decision(top, None if fn is None else top, fn, conf, scores)


class Router(ABC):
    """Routes a message (with optional earlier turns) to an agent, `clarify` or `none`."""

    name: str = "router"

    def __init__(self, registry: Registry | None = None, clarify_threshold: float = DEFAULT_CLARIFY_THRESHOLD):
        self.registry = registry or default_registry()
        if not 0.0 <= clarify_threshold <= 1.0:
            raise InputError("clarify threshold must be between 0 and 1")
        self.clarify_threshold = clarify_threshold

    @property
    def labels(self) -> list[str]:
        return self.registry.labels

    @abstractmethod
    def scores_batch(self, texts: Sequence[str], histories: Sequence[Sequence[Turn]]) -> list[dict[str, float]]:
        """A probability per label (summing to 1) for each message."""

    def route(self, text: str, history: Sequence[Turn] | None = None) -> Decision:
        """Route one message; history holds the earlier user turns, oldest first."""
        return self.route_batch([text], [list(history or [])])[0]

    def route_batch(self, texts: Sequence[str], histories: Sequence[Sequence[Turn]] | None = None) -> list[Decision]:
        """Route many messages at once; latency_ms is the batch time divided by its size."""
        texts = [validate_text(t) for t in texts]
        if histories is None:
            histories = [[] for _ in texts]
        if len(histories) != len(texts):
            raise InputError("histories must have one entry per text")
        hist = [[t if isinstance(t, Turn) else Turn(**t) for t in h] for h in histories]
        start = time.perf_counter()
        all_scores = self.scores_batch(texts, hist) if texts else []
        per = (time.perf_counter() - start) * 1000 / max(1, len(texts))
        out = []
        for s in all_scores:
            d = decide(s, self.registry, self.clarify_threshold)
            d.latency_ms = per
            out.append(d)
        return out


def get_router(name: str, **kwargs) -> Router:
    """Build a router by name (`lora`, `keyword`, `rules`, `tfidf`, `embedding`)."""
    if name == "lora":
        from .lora import LoraRouter

        return LoraRouter(**kwargs)
    if name in ("keyword", "rules", "tfidf", "embedding"):
        from . import baselines

        return baselines.build(name, **kwargs)
    raise InputError(f"unknown router {name!r}; choose one of: {', '.join(ROUTER_NAMES)}")
