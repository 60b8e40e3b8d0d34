"""Averaging adapters (`shoprouter average`): the merged update is the mean of theirs, on both load paths."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from shoprouter.average import average_adapters
from shoprouter.errors import ShopRouterError
from shoprouter.lora import LoraRouter, load_adapted_model, read_lora
from shoprouter.model import Checkpoint
from shoprouter.rows import read_rows
from shoprouter.train import TrainConfig, train

from .test_cli import assert_one_line_error, run


@pytest.fixture(scope="module")
def other_adapter(tiny_base, tiny_data, tmp_path_factory):
    """A second tiny adapter: another seed, rank 4, and partly other layers (gate_proj, no k_proj/o_proj)."""
    out = tmp_path_factory.mktemp("other-adapter")
    cfg = TrainConfig(epochs=1, lr=5e-3, batch_size=16, base=str(tiny_base), val_rows=18, seed=1, r=4, alpha=8,
                      target_modules=["q_proj", "v_proj", "gate_proj"])
    train(tiny_data, out, cfg, progress=False)
    return out


@pytest.fixture(scope="module")
def averaged(tiny_adapter, other_adapter, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("averaged")
    meta = average_adapters([tiny_adapter[0], other_adapter], out, read_rows(tiny_data / "val.jsonl"))
    return out, meta


def test_merged_update_is_the_mean_of_the_adapters_updates(tiny_base, tiny_adapter, other_adapter, averaged):
    ones = [read_lora(tiny_adapter[0]), read_lora(other_adapter)]
    mean = read_lora(averaged[0])
    base = Checkpoint(tiny_base)
    prefix = "model." if "model.norm.weight" in base else ""
    names = set(ones[0].factors) | set(ones[1].factors)
    assert set(mean.factors) == names  # gate_proj from one, k_proj/o_proj from the other
    for name in names:
        w = base.get(prefix + name).float()
        expected = sum(lora.merged(name, w) - w for lora in ones) / 2
        assert torch.allclose(mean.merged(name, w) - w, expected, atol=1e-6), name
        assert expected.abs().max() > 0


def test_peft_merge_of_the_average_is_the_mean_of_the_peft_merges(tiny_base, tiny_adapter, other_adapter, averaged):
    merged = [load_adapted_model(str(tiny_base), a)[0].state_dict()
              for a in (tiny_adapter[0], other_adapter, averaged[0])]
    for key, w in merged[2].items():
        assert torch.allclose(w, (merged[0][key] + merged[1][key]) / 2, atol=1e-6), key


def test_average_is_calibrated_and_routes(averaged, tiny_adapter, other_adapter):
    out, meta = averaged
    assert meta["calibration"]["rows"] == 18
    assert 0.05 <= meta["temperature"] <= 20 and meta["temperature"] != 1.0
    assert [m["adapter"] for m in meta["averaged_from"]] == [str(tiny_adapter[0]), str(other_adapter)]
    assert [m["train_config"]["r"] for m in meta["averaged_from"]] == [16, 4]
    assert "train_config" not in meta and "train_rows" not in meta  # each input's record, not the first's
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16 + 4
    router = LoraRouter(adapter=out)
    assert router.temperature == meta["temperature"]
    d = router.route("where is my parcel?")
    assert abs(sum(d.scores.values()) - 1) < 1e-4 and d.decision in router.registry.labels


def test_average_refuses_what_it_cannot_average(tiny_adapter, tiny_data, tmp_path):
    rows = read_rows(tiny_data / "val.jsonl")
    with pytest.raises(ShopRouterError, match="at least two"):
        average_adapters([tiny_adapter[0]], tmp_path / "out", rows)
    with pytest.raises(ShopRouterError, match="given twice"):
        average_adapters([tiny_adapter[0], tiny_adapter[0]], tmp_path / "out", rows)
    other = tmp_path / "other-agents"
    shutil.copytree(tiny_adapter[0], other, ignore=shutil.ignore_patterns("checkpoint"))
    meta = json.loads((other / "router.json").read_text())
    meta["agents"] = meta["agents"][:-1]
    (other / "router.json").write_text(json.dumps(meta))
    with pytest.raises(ShopRouterError, match="other agents"):
        average_adapters([tiny_adapter[0], other], tmp_path / "out", rows)
    with pytest.raises(ShopRouterError, match="one of the adapters"):
        average_adapters([tiny_adapter[0], other], other, rows)
    with pytest.raises(ShopRouterError, match="no validation rows"):
        average_adapters([tiny_adapter[0], other], tmp_path / "out", [])
    assert not (tmp_path / "out").exists()


def test_cli_average_gives_one_line_errors(tiny_adapter, tiny_data, tmp_path):
    assert_one_line_error(run("average", tiny_adapter[0], "--out", tmp_path / "o", "--data", tiny_data), "at least two")
    assert_one_line_error(run("average", tiny_adapter[0], tmp_path / "nothing", "--out", tmp_path / "o",
                              "--data", tiny_data), "no trained adapter")
    assert_one_line_error(run("average", tiny_adapter[0], tiny_adapter[0], "--out", tmp_path / "o",
                              "--data", tmp_path), "no val.jsonl")


def test_truncate_keeps_the_top_singular_directions():
    from shoprouter.average import truncate

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 40, generator=g), torch.randn(30, 6, generator=g)
    s = torch.linalg.svdvals(b @ a)
    a3, b3 = truncate(a, b, 3)
    assert a3.shape == (3, 40) and b3.shape == (30, 3)
    residual = torch.linalg.matrix_norm(b @ a - b3 @ a3)
    assert torch.isclose(residual, s[3:].square().sum().sqrt(), rtol=1e-4)  # Eckart-Young: the best rank 3
    a6, b6 = truncate(a, b, 6)
    assert torch.allclose(b6 @ a6, b @ a, atol=1e-4)


def test_bfloat16_storage_halves_the_file_and_merges_the_same_update(tiny_base, averaged, tiny_adapter, other_adapter,
                                                                     tiny_data, tmp_path):
    half = tmp_path / "bf16"
    average_adapters([tiny_adapter[0], other_adapter], half, read_rows(tiny_data / "val.jsonl"), dtype="bfloat16")
    size = (averaged[0] / "adapter_model.safetensors").stat().st_size
    assert (half / "adapter_model.safetensors").stat().st_size < 0.55 * size
    exact, stored = read_lora(averaged[0]), read_lora(half)
    base = Checkpoint(tiny_base)
    prefix = "model." if "model.norm.weight" in base else ""
    for name in exact.factors:
        w = base.get(prefix + name).float()
        want = exact.merged(name, w) - w
        assert torch.allclose(stored.merged(name, w) - w, want, atol=2e-2 * want.abs().max().item()), name
    peft = load_adapted_model(str(tiny_base), half)[0].state_dict()
    ref = load_adapted_model(str(tiny_base), averaged[0])[0].state_dict()
    assert all(torch.allclose(peft[k], ref[k], atol=1e-2) for k in ref)
    with pytest.raises(ShopRouterError, match="storage dtype"):
        average_adapters([tiny_adapter[0], other_adapter], tmp_path / "x", read_rows(tiny_data / "val.jsonl"),
                         dtype="float16")


def test_continued_training_of_an_average_records_its_real_lora_shape(tiny_base, tiny_data, averaged, tmp_path):
    out = tmp_path / "continued"
    cfg = TrainConfig(epochs=0.2, lr=1e-3, batch_size=16, base=str(tiny_base), val_rows=18)  # r=16 by default
    train(tiny_data, out, cfg, resume_from=averaged[0], progress=False)
    meta = json.loads((out / "router.json").read_text())
    assert meta["resumed_from"] == str(averaged[0])
    shape = json.loads((averaged[0] / "adapter_config.json").read_text())
    assert (meta["train_config"]["r"], meta["train_config"]["alpha"]) == (shape["r"], shape["lora_alpha"]) == (20, 20)
    assert meta["train_config"]["target_modules"] == sorted(shape["target_modules"])
