"""The `shoprouter` command as a user runs it (subprocess): contract JSON and one-line errors on bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoprouter.rows import Row, write_rows

EXE = shutil.which("shoprouter", path=str(Path(sys.executable).parent)) or shutil.which("shoprouter")
ROUTE_KEYS = {"decision", "agent", "function", "confidence", "scores", "latency_ms"}
LABELS = ["order", "search", "details", "returns", "account", "payment", "technical", "clarify", "none"]


def run(*args, input: bytes | None = None, tmp_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    if tmp_path is not None:
        env["SHOPROUTER_CACHE"] = str(tmp_path / "cache")
    return subprocess.run([EXE, *map(os.fsdecode, args)] if all(isinstance(a, (str, Path)) for a in args)
                          else [os.fsencode(EXE), *args], input=input, capture_output=True, env=env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode != 0, (proc.stdout, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert proc.stdout == b""


def test_route_json_contract():
    proc = run("route", "where is my order 5531? it hasn't arrived", "--router", "rules", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == ROUTE_KEYS
    assert out["decision"] == "order" and out["agent"] == "order" and out["function"] == "route_to_order_agent"
    assert list(out["scores"]) == LABELS
    assert math.isclose(sum(out["scores"].values()), 1.0, abs_tol=1e-4)
    assert out["confidence"] == max(out["scores"].values())
    assert out["latency_ms"] >= 0


@pytest.mark.parametrize("text,decision", [("tell me a joke", "none"), ("hi", "clarify")])
def test_route_non_agent_decisions_have_null_agent(text, decision):
    out = json.loads(run("route", text, "--router", "rules", "--json").stdout)
    assert out["decision"] == decision and out["agent"] is None and out["function"] is None


def test_route_threshold_and_history(tmp_path):
    hist = tmp_path / "h.jsonl"
    hist.write_text('{"text": "where is my order 5531?", "label": "order"}\n', encoding="utf-8")
    out = json.loads(run("route", "ok then cancel it", "--history-file", hist, "-r", "keyword", "--json").stdout)
    assert out["decision"] == "order"
    out = json.loads(run("route", "ok then cancel it", "--history-file", hist, "-r", "keyword", "--threshold",
                         "0.99", "--json").stdout)
    assert out["decision"] == "clarify" and out["agent"] is None


def test_route_readable_line_and_stdin():
    proc = run("route", "-", "-r", "rules", input=b"my card was declined\n")
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("payment (route_to_payment_agent)")
    assert len(proc.stdout.decode().strip().splitlines()) == 1


def test_route_trained_baseline_with_saved_model(tmp_path, labelled_rows):
    from shoprouter.baselines import TfidfRouter

    model = TfidfRouter().fit(labelled_rows).save(tmp_path / "tfidf.joblib")
    proc = run("route", "reset my password please", "-r", "tfidf", "--opt", f"model_path={model}", "--json",
               tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == ROUTE_KEYS and max(out["scores"], key=out["scores"].get) == "account"


def test_eval_json_and_report(tmp_path, labelled_file):
    rep = tmp_path / "rep"
    proc = run("eval", "--data", labelled_file, "--router", "rules", "--json", "--report", rep, "--batch-size", "7")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"n", "accuracy", "macro_f1", "per_label", "confusion", "latency_ms", "ece", "multi_turn"} <= set(out)
    assert list(out["per_label"]) == LABELS
    assert set(out["per_label"]["order"]) == {"precision", "recall", "f1", "support"}
    assert out["confusion"]["labels"] == LABELS
    assert set(out["latency_ms"]) == {"p50", "p95", "mean"}
    assert out["batch_size"] == 7
    for name in ("report.json", "report.md", "confusion.png", "reliability.png"):
        assert (rep / name).is_file()
    readable = run("eval", "--data", labelled_file, "--router", "keyword")
    assert readable.returncode == 0 and b"accuracy" in readable.stdout


def test_eval_compare_shows_unavailable_router(tmp_path, labelled_file):
    other = tmp_path / "other.jsonl"
    write_rows([Row("where is my parcel", "order"), Row("tell me a joke", "none")], other)
    proc = run("eval", "--compare", "--routers", "keyword,rules,tfidf", "--data", labelled_file, "--data", other,
               "--opt", "tfidf.model_path=/nonexistent/m.joblib", "--latency-sample", "3", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "router comparison" in text and "unavailable" in text and "model file not found" in text
    proc = run("eval", "--compare", "--routers", "keyword,rules", "--data", labelled_file, "--json",
               "--latency-sample", "3")
    out = json.loads(proc.stdout)
    assert [(r["router"], r["available"]) for r in out["rows"]] == [("keyword", True), ("rules", True)]


def test_data_generate(tmp_path):
    proc = run("data", "generate", "--out", tmp_path / "gen", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "card.json", "README.md"):
        assert (tmp_path / "gen" / name).is_file()
    assert b"train" in proc.stdout and b"order" in proc.stdout


# ---------------------------------------------------------------------------------------------- bad input
def _file(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_error_empty_text():
    assert_one_line_error(run("route", "", "-r", "rules", "--json"), "empty")
    assert_one_line_error(run("route", "   ", "-r", "rules"), "empty")


def test_error_one_megabyte_text():
    big = b"a" * (1 << 20)
    assert_one_line_error(run("route", "-", "-r", "rules", "--json", input=big), "too long")
    # as an argument (the OS caps one argument at 128 KiB, so use 100k characters)
    assert_one_line_error(run("route", "b" * 100_000, "-r", "rules"), "too long")


def test_error_invalid_utf8(tmp_path):
    bad = _file(tmp_path, "bad.jsonl", b'{"text": "ok", "label": "order"}\n{"text": "\xff\xfe", "label": "order"}\n')
    assert_one_line_error(run("eval", "--data", bad, "-r", "rules"), "bad.jsonl:2: not valid UTF-8")
    assert_one_line_error(run(b"route", b"caf\xe9", b"-r", b"rules"), "not valid UTF-8")
    assert_one_line_error(run("route", "-", "-r", "rules", input=b"\xff\xfe"), "not valid UTF-8")


def test_error_unknown_label_in_data(tmp_path):
    bad = _file(tmp_path, "bad.jsonl", b'{"text": "where is it", "label": "shipping"}\n')
    assert_one_line_error(run("eval", "--data", bad, "-r", "rules"), "unknown label 'shipping'")


def test_error_malformed_data_row(tmp_path):
    bad = _file(tmp_path, "bad.jsonl", b'{"text": "where is it", "label": "order"\n')
    assert_one_line_error(run("eval", "--data", bad, "-r", "rules"), "invalid JSON")
    empty = _file(tmp_path, "empty.jsonl", b"\n")
    assert_one_line_error(run("eval", "--data", empty, "-r", "rules"), "no rows")


def test_error_unknown_router(labelled_file):
    assert_one_line_error(run("route", "hello", "--router", "magic"), "unknown router 'magic'")
    assert_one_line_error(run("eval", "--data", labelled_file, "--router", "magic"), "unknown router")
    assert_one_line_error(run("eval", "--data", labelled_file, "--compare", "--routers", "rules,magic"),
                          "unknown router")


def test_error_missing_files(tmp_path):
    assert_one_line_error(run("eval", "--data", tmp_path / "nope.jsonl", "-r", "rules"), "not found")
    assert_one_line_error(run("route", "hi", "-r", "rules", "--history-file", tmp_path / "nope.jsonl"),
                          "history file not found")
    assert_one_line_error(run("route", "hi", "-r", "tfidf", "--opt", f"model_path={tmp_path / 'm.joblib'}"),
                          "model file not found")


@pytest.mark.parametrize("content,fragment", [
    (b'{"text": "where is my order"\n', "invalid JSON"),
    (b'[1, 2]', "must be an object"),
    (b'{"label": "order"}\n', "must be an object with a 'text'"),
    (b'{"text": "where is my order", "label": "shipping"}\n', "unknown label"),
    (b'{"text": ""}\n', "empty"),
    (b'"\xff"\n', "not valid UTF-8"),
    (b'{"text": 5}\n', "must be a string"),
])
def test_error_malformed_history_file(tmp_path, content, fragment):
    hist = _file(tmp_path, "h.jsonl", content)
    assert_one_line_error(run("route", "cancel it", "-r", "rules", "--history-file", hist), fragment)


def test_error_bad_options(tmp_path, labelled_file):
    assert_one_line_error(run("route", "hi", "-r", "rules", "--threshold", "1.5"), "threshold")
    assert_one_line_error(run("route", "hi", "-r", "rules", "--opt", "novalue"), "KEY=VALUE")
    assert_one_line_error(run("route", "hi", "-r", "rules", "--opt", "bogus=1"), "does not accept")
    assert_one_line_error(run("eval", "--data", labelled_file, "-r", "rules", "--batch-size", "0"), "batch-size")
    assert_one_line_error(run("route", "hi", "-r", "rules", "--no-such-flag"), "no such option")
    target = _file(tmp_path, "afile", b"x")
    assert_one_line_error(run("data", "generate", "--out", target), "not a directory")
    for targets in ("q_proj,lm_head", "q_proj,q_proj", ","):
        assert_one_line_error(run("train", "--data", tmp_path, "--out", tmp_path / "o", "--targets", targets),
                              "--targets must list distinct layers")
    for rank in ("0", "1000"):
        assert_one_line_error(run("train", "--data", tmp_path, "--out", tmp_path / "o", "--rank", rank), "--rank")


def test_bench_json_with_router_options(labelled_file):
    proc = run("bench", "--data", labelled_file, "--routers", "keyword,rules:clarify_threshold=0.5",
               "--n-single", "5", "--n-batch", "8", "--batch-size", "4", "--passes", "2", "--reference-n", "0", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert [r["router"] for r in out["results"]] == ["keyword", "rules:clarify_threshold=0.5"]
    for r in out["results"]:
        assert "error" not in r, r
        assert r["single_ms"]["n"] == 5 and r["single_ms"]["p50"] <= r["single_ms"]["p95"]
        assert r["throughput_msgs_per_s"] > 0 and r["peak_rss_mb_process"] > 0
        assert len(r["throughput_passes"]) == 2 and min(r["throughput_passes"]) <= r["throughput_msgs_per_s"]


def test_bench_unknown_router_is_a_one_line_error(labelled_file):
    assert_one_line_error(run("bench", "--data", labelled_file, "--routers", "lora,nope:x=1", "--json"), "nope")
