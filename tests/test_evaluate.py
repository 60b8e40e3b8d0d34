"""evaluate(): contract keys and hand-checked numbers on a tiny case; reports; compare()."""

from __future__ import annotations

import json
import math

import pytest

from shoprouter.errors import ShopRouterError
from shoprouter.evaluate import compare, evaluate, expected_calibration_error, write_report
from shoprouter.router import Router
from shoprouter.rows import Row, Turn

CONTRACT_KEYS = {"n", "accuracy", "macro_f1", "per_label", "confusion", "latency_ms", "ece"}


class FixedRouter(Router):
    """Scores each text as listed: (top label, its probability); the rest is shared equally."""

    name = "fixed"

    def __init__(self, table: dict[str, tuple[str, float]]):
        super().__init__()
        self.table = table
        self.seen_histories: dict[str, int] = {}

    def scores_batch(self, texts, histories):
        out = []
        for text, hist in zip(texts, histories, strict=True):
            self.seen_histories[text] = len(hist)
            top, p = self.table[text]
            rest = (1 - p) / (len(self.labels) - 1)
            out.append({lab: p if lab == top else rest for lab in self.labels})
        return out


TABLE = {"a": ("order", 0.9), "b": ("search", 0.8), "c": ("order", 0.9), "d": ("none", 0.6),
         "e": ("returns", 0.5), "f": ("order", 0.95)}
ROWS = [Row("a", "order"), Row("b", "search"), Row("c", "search"), Row("d", "none"), Row("e", "clarify"),
        Row("f", "order", [Turn("where is my parcel", "order")])]


def test_evaluate_tiny_case_by_hand():
    router = FixedRouter(TABLE)
    res = evaluate(router, ROWS, batch_size=4, latency_sample=3)
    assert CONTRACT_KEYS <= set(res)
    assert res["n"] == 6
    assert res["accuracy"] == pytest.approx(5 / 6, abs=1e-6)  # c is wrong; e is a low-confidence clarify
    # F1: order 0.8 (P 2/3, R 1), search 2/3 (P 1, R 1/2), none 1, clarify 1; returns never occurs
    assert res["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 1 + 1) / 4, abs=1e-6)
    assert res["macro_f1_labels"] == ["order", "search", "clarify", "none"]
    assert list(res["per_label"]) == router.labels
    assert res["per_label"]["order"] == {"precision": pytest.approx(2 / 3, abs=1e-6), "recall": 1.0,
                                         "f1": pytest.approx(0.8, abs=1e-6), "support": 2}
    assert res["per_label"]["search"]["recall"] == 0.5
    assert res["per_label"]["returns"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    labels = res["confusion"]["labels"]
    m = res["confusion"]["matrix"]
    assert labels == router.labels and len(m) == 9 and all(len(r) == 9 for r in m)
    ix = labels.index
    assert m[ix("order")][ix("order")] == 2
    assert m[ix("search")][ix("order")] == 1 and m[ix("search")][ix("search")] == 1
    assert m[ix("clarify")][ix("clarify")] == 1
    assert sum(map(sum, m)) == 6
    # ECE over top probability vs top label correct: bins .9 {a,c,f}, .8 {b}, .6 {d}, .5 {e (top returns: wrong)}
    assert res["ece"] == pytest.approx((3 * abs(2 / 3 - 0.9166667) + 0.2 + 0.4 + 0.5) / 6, abs=1e-5)
    assert set(res["latency_ms"]) == {"p50", "p95", "mean"}
    assert "single-message" in res["latency_mode"]
    assert res["multi_turn"] == {"n": 1, "accuracy": 1.0}
    assert res["clarify_threshold"] == 0.7
    assert res["low_confidence_clarify"] == 1
    assert router.seen_histories["f"] == 1  # rows with history are routed with it
    json.dumps(res)  # serialisable


def test_ece_helper():
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([0.95, 0.95], [False, False]) == pytest.approx(0.95)
    assert math.isclose(expected_calibration_error([0.55, 0.65], [True, False]), (0.45 + 0.65) / 2)


def test_evaluate_rejects_bad_input():
    router = FixedRouter(TABLE)
    with pytest.raises(ShopRouterError, match="no rows"):
        evaluate(router, [])
    with pytest.raises(ShopRouterError, match="labels the router does not know"):
        evaluate(router, [Row("a", "shipping")])


def test_write_report(tmp_path):
    res = evaluate(FixedRouter(TABLE), ROWS, latency_sample=2)
    paths = write_report(res, tmp_path / "rep")
    for key in ("json", "markdown", "confusion", "reliability"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert json.loads(paths["json"].read_text())["accuracy"] == res["accuracy"]
    md = paths["markdown"].read_text()
    assert "| order |" in md and "accuracy" in md
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_marks_unloadable_routers(labelled_rows, capsys):
    from rich.console import Console

    out = compare(["keyword", "rules", "tfidf"], {"small": labelled_rows, "head": labelled_rows[:20]},
                  router_kwargs={"tfidf": {"model_path": "/nonexistent/tfidf.joblib"}}, latency_sample=5,
                  console=Console(width=200))
    rows = {(r["router"], r["dataset"]): r for r in out["rows"]}
    assert len(rows) == 6
    ok = rows[("rules", "small")]
    assert ok["available"] and ok["n"] == len(labelled_rows)
    assert {"accuracy", "macro_f1", "p50_ms", "memory_mb"} <= set(ok)
    assert ok["accuracy"] > 0.8
    bad = rows[("tfidf", "small")]
    assert not bad["available"] and "model file not found" in bad["reason"]
    printed = capsys.readouterr().out
    assert "unavailable" in printed and "rules" in printed
