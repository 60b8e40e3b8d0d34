"""Baseline routers: obvious messages go to the right label, scores are distributions, models save/load/cache."""

from __future__ import annotations

import math

import pytest

from shoprouter import baselines
from shoprouter.errors import InputError, ShopRouterError
from shoprouter.router import get_router
from shoprouter.rows import Row, Turn, write_rows

OBVIOUS = [
    ("where is my order 8812? it still hasn't arrived", "order"),
    ("do you sell running shoes under $60", "search"),
    ("is this tent waterproof", "details"),
    ("i want a refund, the mug is broken", "returns"),
    ("how do i change my email address", "account"),
    ("my card was declined at checkout", "payment"),
    ("the app keeps crashing when i open it", "technical"),
]
OUT_OF_SCOPE = [("what's the weather like tomorrow", "none"), ("tell me a joke", "none")]
VAGUE = [("help", "clarify"), ("hi", "clarify")]


def assert_distribution(scores: dict, labels: list[str]) -> None:
    assert list(scores) == labels
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("name", ["keyword", "rules"])
def test_untrained_baselines_route_obvious_messages(name):
    router = get_router(name)
    cases = OBVIOUS + VAGUE + (OUT_OF_SCOPE if name == "rules" else [])
    for text, label in cases:
        d = router.route(text)
        assert d.decision == label, (name, text, d.decision, d.scores)
        assert_distribution(d.scores, router.labels)
    # the keyword router never declines: off-topic text has no keyword, so it asks
    if name == "keyword":
        assert router.route("tell me a joke").decision == "clarify"


@pytest.mark.parametrize("name", ["keyword", "rules"])
def test_history_carries_the_topic(name):
    router = get_router(name)
    d = router.route("what about the blue one?", [Turn("do you have hoodies in XL", "search")])
    assert d.decision == "search"
    assert router.route("ok then cancel it", [Turn("where is my order 5531", "order")]).decision == "order"


def test_rules_cover_every_label():
    labels = {lab for _, lab, _ in baselines.RULES}
    assert labels == set(get_router("rules").labels)
    assert 90 <= len(baselines.RULES) <= 130


def test_rules_route_agents_without_hand_written_rules_by_their_keywords():
    from shoprouter.agents import DEFAULT_AGENTS, Agent, Registry

    assert get_router("rules").keyword_rules == []  # the default seven all have hand-written rules
    agents = [a for a in DEFAULT_AGENTS if a.key != "order"]
    registry = Registry((Agent("shipping", "Where a parcel is.", ("parcel", "courier")), *agents))
    router = get_router("rules", registry=registry)
    assert router.keyword_rules == ["shipping"]
    d = router.route("the COURIER lost it")
    assert d.decision == "shipping" and d.confidence >= 0.7, d.scores
    assert_distribution(d.scores, registry.labels)
    assert router.route("i want a refund, the mug is broken").decision == "returns"  # hand-written rules still apply
    assert router.route("hi").decision == "clarify"


def test_tfidf_fit_route_save_load(tmp_path, labelled_rows):
    router = baselines.TfidfRouter().fit(labelled_rows)
    for text, label in OBVIOUS + OUT_OF_SCOPE[1:] + VAGUE[:1]:
        d = router.route(text)
        assert max(d.scores, key=d.scores.get) == label, (text, d.scores)
    batch = router.route_batch(["ok then cancel it", "how much is it"],
                               [[Turn("where is my order 5531", "order")], []])
    for d in batch:
        assert_distribution(d.scores, router.labels)
    path = router.save(tmp_path / "m" / "tfidf.joblib")
    loaded = baselines.TfidfRouter.load(path)
    assert loaded.route("is this tent waterproof").scores == router.route("is this tent waterproof").scores
    with pytest.raises(ShopRouterError, match="not a embedding router model"):
        baselines.EmbeddingRouter.load(path)


def test_trained_router_errors(tmp_path):
    with pytest.raises(ShopRouterError, match="not trained"):
        baselines.TfidfRouter().route("hello there")
    with pytest.raises(ShopRouterError, match="outside the registry"):
        baselines.TfidfRouter().fit([Row("a", "order"), Row("b", "shipping")])
    with pytest.raises(ShopRouterError, match="model file not found"):
        baselines.build("tfidf", model_path=tmp_path / "missing.joblib")
    with pytest.raises(ShopRouterError, match="train file not found"):
        baselines.build("tfidf", train_path=tmp_path / "missing.jsonl", cache_dir=tmp_path)
    bad = tmp_path / "bad.joblib"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ShopRouterError, match="cannot read model file"):
        baselines.build("tfidf", model_path=bad)
    with pytest.raises(InputError, match="unknown router"):
        get_router("magic")


def test_build_trains_once_and_caches(tmp_path, labelled_rows):
    train = tmp_path / "train.jsonl"
    write_rows(labelled_rows, train)
    cache = tmp_path / "cache"
    first = baselines.build("tfidf", train_path=train, cache_dir=cache)
    cached = list((cache / "models").glob("tfidf-*.joblib"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    second = baselines.build("tfidf", train_path=train, cache_dir=cache, clarify_threshold=0.5)
    assert cached[0].stat().st_mtime_ns == mtime  # loaded, not retrained
    assert second.clarify_threshold == 0.5
    assert second.route("reset my password").scores == first.route("reset my password").scores


def test_build_generates_train_split_when_absent(tmp_path, monkeypatch, labelled_rows):
    from shoprouter import data

    calls = []

    def fake_generate(out_dir, seed=0, **_):
        calls.append(seed)
        write_rows(labelled_rows, out_dir / "train.jsonl")
        return {}

    monkeypatch.setattr(data, "generate", fake_generate)
    monkeypatch.setenv("SHOPROUTER_CACHE", str(tmp_path / "c"))
    router = baselines.build("tfidf")
    assert calls == [0]
    assert router.route("my card was declined").decision == "payment"
    assert len(list((tmp_path / "c" / "data").glob("seed0-*/train.jsonl"))) == 1
    baselines.build("tfidf")
    assert calls == [0]  # the generated split is reused


def test_embedding_router(tmp_path, labelled_rows):
    router = baselines.EmbeddingRouter().fit(labelled_rows)
    texts = [t for t, _ in OBVIOUS + OUT_OF_SCOPE]
    decisions = router.route_batch(texts)
    predicted = [max(d.scores, key=d.scores.get) for d in decisions]
    expected = [lab for _, lab in OBVIOUS + OUT_OF_SCOPE]
    assert sum(p == e for p, e in zip(predicted, expected, strict=True)) >= len(expected) - 1, predicted
    for d in decisions:
        assert_distribution(d.scores, router.labels)
    loaded = baselines.EmbeddingRouter.load(router.save(tmp_path / "emb.joblib"))
    a, b = loaded.route(texts[0]).scores, router.route(texts[0]).scores
    assert all(math.isclose(a[k], b[k], abs_tol=1e-5) for k in a)
