"""Tests for the synthetic dataset generator (fixture templates; one test on the package templates)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from shoprouter.agents import CLARIFY, NONE, default_registry
from shoprouter.data import (
    SPLITS,
    add_typos,
    default_templates_dir,
    fill_slots,
    generate,
    group_overlap,
    is_followup_group,
    load_templates,
    strip_punctuation,
)
from shoprouter.errors import ShopRouterError
from shoprouter.rows import read_rows

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
LABELS = default_registry().labels
N_ROWS = 1500


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("gen")
    card = generate(out, seed=3, templates_dir=FIXTURES, n_rows=N_ROWS)
    splits = {s: read_rows(out / f"{s}.jsonl", LABELS) for s in SPLITS}
    return out, card, splits


def all_rows(splits: dict) -> list:
    return [r for s in SPLITS for r in splits[s]]


def test_deterministic(tmp_path: Path, generated: tuple) -> None:
    out, _, _ = generated
    generate(tmp_path, seed=3, templates_dir=FIXTURES, n_rows=N_ROWS)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "card.json", "README.md"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_other_seed_differs(tmp_path: Path, generated: tuple) -> None:
    out, _, _ = generated
    generate(tmp_path, seed=4, templates_dir=FIXTURES, n_rows=N_ROWS)
    assert (tmp_path / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()


def test_no_group_overlap_and_every_label_in_every_split(generated: tuple) -> None:
    _, card, splits = generated
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert group_overlap(splits[a], splits[b]) == set()
    for s in SPLITS:
        assert {r.label for r in splits[s]} == set(LABELS), s
    assert set(card["shared_groups"].values()) == {0}


def test_shares_and_multi_turn(generated: tuple) -> None:
    _, card, splits = generated
    rows = all_rows(splits)
    total = len(rows)
    assert total >= 0.95 * N_ROWS
    for label in (CLARIFY, NONE):
        assert sum(r.label == label for r in rows) / total >= 0.05
    assert sum(bool(r.history) for r in rows) / total >= 0.10
    assert card["multi_turn"]["fraction"] >= 0.10


def test_rows_are_well_formed(generated: tuple) -> None:
    _, _, splits = generated
    seen = set()
    for r in all_rows(splits):
        assert r.group and r.group.split("/")[0] == r.label
        assert len(r.group.split("/")) == 3
        for text in [r.text, *(t.text for t in r.history)]:
            assert "{" not in text and "}" not in text and text.strip()
        assert all(t.label in LABELS for t in r.history)
        key = (r.text, *(t.text for t in r.history))
        assert key not in seen
        seen.add(key)


def test_followups_only_with_history(generated: tuple) -> None:
    _, _, splits = generated
    rows = all_rows(splits)
    followups = [r for r in rows if is_followup_group(r.group)]
    assert followups
    assert all(r.history and r.history[-1].label == r.label for r in followups)
    switches = [r for r in rows if r.history and not is_followup_group(r.group)]
    assert switches and all(r.history[0].label != r.label for r in switches)


def test_card_matches_files(generated: tuple) -> None:
    out, card, splits = generated
    assert json.loads((out / "card.json").read_text()) == card
    assert card["total_rows"] == len(all_rows(splits))
    for s in SPLITS:
        assert card["splits"][s]["rows"] == len(splits[s])
        assert card["splits"][s]["groups"] == len({r.group for r in splits[s]})
        assert card["splits"][s]["multi_turn"] == sum(bool(r.history) for r in splits[s])
        for label in LABELS:
            assert card["splits"][s]["per_label"][label] == sum(r.label == label for r in splits[s])
    for label in LABELS:
        assert card["per_label"][label]["rows"] == sum(r.label == label for r in all_rows(splits))
        assert card["examples"][label]
    readme = (out / "README.md").read_text()
    assert "| label |" in readme and str(card["total_rows"]) in readme


def test_unknown_slot_raises(tmp_path: Path) -> None:
    for f in FIXTURES.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "details.yaml"
    path.write_text(path.read_text().replace("{product}", "{prodcut}", 1))
    with pytest.raises(ShopRouterError, match=r"unknown slot \{prodcut\}.*allowed slots"):
        load_templates(tmp_path)


def test_bad_template_files(tmp_path: Path) -> None:
    with pytest.raises(ShopRouterError, match="not found"):
        load_templates(tmp_path / "missing")
    with pytest.raises(ShopRouterError, match="no template files"):
        load_templates(tmp_path)
    (tmp_path / "order.yaml").write_text("label: search\nintents: [{id: a, phrases: [x]}]\n")
    with pytest.raises(ShopRouterError, match="must equal the file name"):
        load_templates(tmp_path)
    (tmp_path / "order.yaml").write_text("label: order\nintents: [{id: a, phrases: ['where is {order_id']}]\n")
    with pytest.raises(ShopRouterError, match="unbalanced brace"):
        load_templates(tmp_path)


def test_fill_slots_and_variation() -> None:
    rng = random.Random(0)
    for _ in range(200):
        text = fill_slots("how does a {product} compare to the {product2} in {color} or {color2}", rng)
        assert "{" not in text and " a a" not in text
        assert not fill_slots("where is my order {order_id}", rng).lower().startswith("where is my order order")
    assert strip_punctuation("Hi, it's $49.99 for jane.doe@gmail.com?!") == "Hi its $49.99 for jane.doe@gmail.com"
    typo = add_typos("please check my delivery address", random.Random(1))
    assert typo != "please check my delivery address" and typo.startswith("please")


def test_package_templates(tmp_path: Path) -> None:
    directory = default_templates_dir()
    if not directory.is_dir() or not all((directory / f"{k}.yaml").is_file() for k in LABELS):
        pytest.skip("package templates not present yet")
    card = generate(tmp_path, seed=0)
    assert card["total_rows"] >= 12550
    assert card["multi_turn"]["fraction"] >= 0.12
    for label in (CLARIFY, NONE):
        assert card["per_label"][label]["share"] >= 0.05
    for s in SPLITS:
        assert all(card["splits"][s]["per_label"][k] > 0 for k in LABELS)
    assert set(card["shared_groups"].values()) == {0}
