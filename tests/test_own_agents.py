"""A router for a support desk's own agents, end to end through the CLI on a tiny random Gemma 3 (seconds):
`shoprouter train --agents AGENTS.yaml`, then `route`, `eval` and the service's routing with the adapter,
which brings its own agents (and their descriptions, part of the prompt) wherever it is loaded."""

from __future__ import annotations

import json
import random

import pytest
from fastapi.testclient import TestClient

from shoprouter.agents import Agent, Registry, load_registry, save_registry
from shoprouter.auth import AuthConfig
from shoprouter.cli import main
from shoprouter.cli.serving import _agents
from shoprouter.errors import ShopRouterError
from shoprouter.lora import LoraRouter
from shoprouter.rows import Row, Turn, read_rows, write_rows
from shoprouter.service import create_app
from shoprouter.session import open_store

from .conftest import small_rows
from .service_support import copy_shop, shop_db_path  # noqa: F401
from .tiny import make_tiny_base

OWN = Registry((Agent("shipping", "Where a parcel is, when it arrives, the delivery address.", ("parcel", "delivery")),
                Agent("billing", "Charges, declined cards, invoices and refunds of money.", ("card", "charged"))))
RENAME = {"order": "shipping", "payment": "billing", "clarify": "clarify", "none": "none"}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The tiny base, a dataset labelled with the two own agents (+ clarify, none), its registry file, and an
    adapter trained on them with `shoprouter train --agents`."""
    base = make_tiny_base(tmp_path_factory.mktemp("tiny-base"), std=0.2)
    data = tmp_path_factory.mktemp("own-data")
    rows = [Row(r.text, RENAME[r.label], [Turn(t.text, RENAME.get(t.label, "none")) for t in r.history], r.group)
            for r in small_rows() if r.label in RENAME]
    random.Random(0).shuffle(rows)
    write_rows(rows, data / "train.jsonl")
    write_rows(rows[:10], data / "val.jsonl")
    registry_file = data / "agents.yaml"
    save_registry(OWN, registry_file)
    adapter = tmp_path_factory.mktemp("own-adapter")
    assert main(["train", "--data", str(data), "--out", str(adapter), "--agents", str(registry_file), "--base",
                 str(base), "--epochs", "2", "--lr", "5e-3", "--json"]) == 0
    return base, data, registry_file, adapter


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_records_the_own_agents_and_route_uses_them(own, capsys, tmp_path):
    base, data, registry_file, adapter = own
    meta = json.loads((adapter / "router.json").read_text())
    assert [a["key"] for a in meta["agents"]] == ["shipping", "billing"]
    assert load_registry(registry_file) == OWN

    history = tmp_path / "history.jsonl"
    history.write_text(json.dumps({"text": "my card was charged twice", "label": "billing"}) + "\n")
    capsys.readouterr()
    assert main(["route", "where is my parcel", "--adapter", str(adapter), "--opt", f"base={base}",
                 "--history-file", str(history), "--threshold", "0", "--json"]) == 0
    out = _json(capsys)
    assert set(out["scores"]) == {"shipping", "billing", "clarify", "none"}
    assert sum(out["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert out["decision"] in out["scores"]
    if out["decision"] in ("shipping", "billing"):
        assert out["function"] == f"route_to_{out['decision']}_agent"

    router = LoraRouter(adapter=adapter, base=str(base))
    # the adapter's own agents, descriptions included, are what the prompt declares
    assert router.registry == OWN and router.engine.registry == OWN


def test_eval_reads_rows_with_the_adapters_labels(own, capsys):
    base, data, _, adapter = own
    capsys.readouterr()
    assert main(["eval", "--data", str(data / "val.jsonl"), "--adapter", str(adapter), "--opt", f"base={base}",
                 "--latency-sample", "0", "--json"]) == 0
    result = _json(capsys)
    assert result["n"] == 10
    assert set(result["per_label"]) == {"shipping", "billing", "clarify", "none"}


def test_compare_scores_every_router_with_the_same_agents(own, capsys):
    base, data, registry_file, adapter = own
    args = ["eval", "--compare", "--routers", "lora,keyword", "--data", str(data / "val.jsonl"), "--adapter",
            str(adapter), "--opt", f"lora.base={base}", "--latency-sample", "0", "--json"]
    capsys.readouterr()
    # the keyword router with its default seven agents cannot be scored on rows labelled shipping / billing
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--opt keyword.agents=" in err[0], err
    assert main([*args, "--opt", f"keyword.agents={registry_file}"]) == 0
    rows = {r["router"]: r for r in _json(capsys)["rows"]}
    assert set(rows) == {"lora", "keyword"}
    assert all(r["available"] and r["n"] == 10 for r in rows.values()), rows
    # the keyword router matched the own agents' keywords: "parcel", "card", ... are in the rows
    assert rows["keyword"]["top1_accuracy"] > 0.25, rows


def test_bench_reads_rows_with_the_adapters_labels(own, capsys, tmp_path):
    base, data, _, adapter = own
    args = ["bench", "--adapter", str(adapter), "--routers", "keyword", "--n-single", "2", "--n-batch", "4",
            "--passes", "1", "--reference-n", "3", "--json"]
    capsys.readouterr()
    assert main([*args, "--data", str(data / "val.jsonl")]) == 0
    results = {r["router"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert "error" not in results["reference-generate"], results
    # the reference way's decisions are compared with rows labelled shipping / billing, the adapter's agents
    assert results["reference-generate"]["n"] == 3 and 0.0 <= results["reference-generate"]["accuracy_on_sample"] <= 1
    assert results["keyword"]["throughput_msgs_per_s"] > 0
    other = tmp_path / "default-labels.jsonl"
    write_rows([Row("where is my order", "order")], other)
    assert main([*args, "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "order" in err[0] and err[0].startswith("error: ")


def test_bench_of_baselines_for_own_agents_needs_no_adapter(own, capsys):
    base, data, registry_file, _ = own
    args = ["bench", "--routers", f"keyword:agents={registry_file}", "--data", str(data / "val.jsonl"),
            "--n-single", "2", "--n-batch", "4", "--passes", "1", "--json"]
    capsys.readouterr()
    # rows labelled shipping / billing are read with the keyword router's own agents
    assert main([*args, "--reference-n", "0"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["router"] for r in results] == [f"keyword:agents={registry_file}"]
    assert results[0]["throughput_msgs_per_s"] > 0, results
    # the reference way would run the shipped adapter, which does not route to them: say what to pass
    assert main([*args, "--reference-n", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reference-n 0" in err[0] and "--adapter" in err[0], err


def test_rows_with_labels_the_adapter_does_not_know_are_a_one_line_error(own, capsys, tmp_path):
    base, _, _, adapter = own
    other = tmp_path / "default-labels.jsonl"
    write_rows([Row("where is my order", "order")], other)
    capsys.readouterr()
    assert main(["eval", "--data", str(other), "--adapter", str(adapter), "--opt", f"base={base}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "order" in err[0] and err[0].startswith("error: ")


def test_continuing_with_other_agents_is_refused(own, capsys, tmp_path):
    base, data, _, adapter = own
    other = tmp_path / "other.yaml"
    save_registry(Registry((Agent("shipping", "Parcels."), Agent("sales", "Buying things."))), other)
    capsys.readouterr()
    args = ["train", "--data", str(data), "--out", str(tmp_path / "next"), "--base", str(base), "--epochs", "1"]
    assert main([*args, "--resume-from", str(adapter), "--agents", str(other)]) == 2
    assert "trained for agents" in capsys.readouterr().err
    # other descriptions of the same agents change the prompt: refused too
    save_registry(Registry((Agent("shipping", "Parcels."), Agent("billing", "Money."))), other)
    assert main([*args, "--resume-from", str(adapter), "--agents", str(other)]) == 2
    assert "other descriptions of shipping, billing" in capsys.readouterr().err
    with pytest.raises(ShopRouterError, match="other descriptions"):
        LoraRouter(adapter=adapter, base=str(base), registry=load_registry(other))
    # extra rows must carry the registry's labels
    extra = tmp_path / "extra.jsonl"
    write_rows([Row("where is my order", "order")], extra)
    assert main([*args, "--resume-from", str(adapter), "--extra", str(extra)]) == 2
    assert "registry does not know: order" in capsys.readouterr().err
    write_rows([Row("and now?", "shipping", [Turn("my card", "payment")])], extra)  # in the history too
    assert main([*args, "--resume-from", str(adapter), "--extra", str(extra)]) == 2
    assert "registry does not know: payment" in capsys.readouterr().err


def test_resume_keeps_the_agents_of_the_checkpoint(own, capsys, tmp_path):
    base, data, registry_file, _ = own
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--base", str(base), "--lr", "5e-3", "--json"]
    assert main([*args, "--epochs", "1", "--agents", str(registry_file)]) == 0
    capsys.readouterr()
    # --resume without --agents continues with the checkpoint's agents, not the default seven
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert _json(capsys)["finished"]
    assert [a["key"] for a in json.loads((out / "router.json").read_text())["agents"]] == ["shipping", "billing"]


def test_service_routes_with_the_own_agents(own, tmp_path, shop_db_path, capsys):  # noqa: F811
    base, _, _, adapter = own
    router = LoraRouter(adapter=adapter, base=str(base), clarify_threshold=0.0)
    agents = _agents(copy_shop(shop_db_path, tmp_path / "shop"), router)
    assert "no agent for shipping, billing" in capsys.readouterr().err
    store = open_store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    client = TestClient(create_app(router, store, agents, auth=AuthConfig.disabled()))
    routed = client.post("/v1/route", json={"text": "where is my parcel"}).json()
    assert set(routed["scores"]) == {"shipping", "billing", "clarify", "none"}
    cid = client.post("/v1/conversations", json={}).json()["id"]
    turn = client.post(f"/v1/conversations/{cid}/messages", json={"text": "where is my parcel"})
    assert turn.status_code == 200
    seq = turn.json()["turn"]["seq"]
    label = "billing" if turn.json()["turn"]["decision"] != "billing" else "shipping"
    assert client.put(f"/v1/conversations/{cid}/turns/{seq}/label", json={"label": label}).status_code == 200
    store.close()

    # the correction names one of the own agents: exported with the adapter's labels, left out (and said
    # so) with the shipped adapter's seven
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    out = tmp_path / "corrections.jsonl"
    capsys.readouterr()
    assert main(["data", "export-corrections", "--out", str(out), "--store", url, "--adapter", str(adapter),
                 "--json"]) == 0
    assert _json(capsys)["rows"] == 1
    assert [(r.text, r.label) for r in read_rows(out)] == [("where is my parcel", label)]
    assert main(["data", "export-corrections", "--out", str(out), "--store", url, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows"] == 0
    assert f"corrections to {label} are left out" in captured.err


def test_rename_agents_script_renames_labels_and_history(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path / "src"
    write_rows([Row("where is my parcel", "order", [Turn("card declined", "payment")], "order/1", {"hard": True}),
                Row("hmm", "clarify")], src / "train.jsonl")
    write_rows([Row("double charge", "payment")], tmp_path / "dev.jsonl")
    script = Path(__file__).resolve().parents[1] / "scripts" / "rename_agents.py"
    subprocess.run([sys.executable, str(script), "--map", "order=shipping,payment=billing", "--src", str(src),
                    "--out", str(tmp_path / "out"), "--also", str(tmp_path / "dev.jsonl")], check=True,
                   capture_output=True, timeout=120)
    rows = read_rows(tmp_path / "out" / "train.jsonl")
    assert [(r.text, r.label, r.group) for r in rows] == [("where is my parcel", "shipping", "order/1"),
                                                          ("hmm", "clarify", None)]
    assert [(t.text, t.label) for t in rows[0].history] == [("card declined", "billing")]
    assert rows[0].extra == {"hard": True}
    assert [r.label for r in read_rows(tmp_path / "out" / "dev.jsonl")] == ["billing"]


def test_baselines_route_with_the_own_agents(own, capsys, tmp_path):
    _, data, registry_file, _ = own
    capsys.readouterr()
    assert main(["eval", "--data", str(data / "val.jsonl"), "--router", "tfidf", "--opt", f"agents={registry_file}",
                 "--opt", f"train_path={data / 'train.jsonl'}", "--opt", f"cache_dir={tmp_path}",
                 "--latency-sample", "0", "--json"]) == 0
    assert set(_json(capsys)["per_label"]) == {"shipping", "billing", "clarify", "none"}
    assert main(["route", "my parcel is late", "--router", "keyword", "--opt", f"agents={registry_file}",
                 "--threshold", "0", "--json"]) == 0
    assert _json(capsys)["decision"] == "shipping"  # "parcel" is one of shipping's keywords in agents.yaml
    assert main(["route", "my parcel is late", "--router", "tfidf", "--opt", f"agents={registry_file}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_path must name" in err[0]
