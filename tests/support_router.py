"""A small deterministic Router for the conversation and service tests (no training, no model).

It counts the registry's keywords per agent in the message (ignoring history: the conversation layer has
to supply the context). One agent with hits gets 0.95; agents that tie share it (and so fall under the
clarify threshold); a message without any keyword is `none`. Loadable by the service as
`tests.support_router:KeywordTestRouter`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shoprouter.agents import CLARIFY, NONE
from shoprouter.router import Router
from shoprouter.rows import Turn


class KeywordTestRouter(Router):
    name = "keyword-test"

    def __init__(self, registry=None, clarify_threshold: float = 0.7):
        super().__init__(registry, clarify_threshold)
        self._patterns = {a.key: [re.compile(rf"(?<![a-z0-9]){re.escape(k.lower())}(?![a-z0-9])")
                                  for k in a.keywords] for a in self.registry.agents}

    def score_one(self, text: str) -> dict[str, float]:
        low = text.lower()
        hits = {k: sum(1 for p in pats if p.search(low)) for k, pats in self._patterns.items()}
        total = sum(hits.values())
        labels = self.labels
        if total == 0:
            scores = {k: 0.0 for k in labels}
            scores[NONE] = 0.9
            scores[CLARIFY] = 0.1
            return scores
        scores = {k: 0.95 * hits.get(k, 0) / total for k in labels}
        scores[CLARIFY] = 0.03
        scores[NONE] = 0.02
        return scores

    def scores_batch(self, texts: Sequence[str], histories: Sequence[Sequence[Turn]]) -> list[dict[str, float]]:
        return [self.score_one(t) for t in texts]


def make_router() -> KeywordTestRouter:
    return KeywordTestRouter()


class SlowKeywordRouter(KeywordTestRouter):
    """Takes three seconds per batch, like a model on a very busy CPU (to show inference doesn't block the server)."""

    name = "slow-keyword-test"

    def scores_batch(self, texts, histories):
        import time

        time.sleep(3.0)
        return super().scores_batch(texts, histories)


class FlatClarifyRouter(KeywordTestRouter):
    """Says clarify for anything with two agents' keywords, with the same score for every agent (like a
    rules router does): the conversation layer has to find the likeliest agents itself."""

    name = "flat-clarify-test"

    def score_one(self, text):
        s = super().score_one(text)
        agents = [k for k in self.registry.keys if s[k] > 0]
        if len(agents) >= 2 or (len(agents) == 1 and len(text.split()) <= 3):
            flat = 0.3 / len(self.registry.keys)
            s = {k: flat for k in self.registry.keys}
            s.update(clarify=0.65, none=0.05)
        return s
