"""`shoprouter train --cycles N`: warm restarts of the cosine schedule, one snapshot per cycle, and the adapter
written at the end is the mean of the snapshots' updates, calibrated."""

from __future__ import annotations

import json
import math

import pytest
import torch

from shoprouter.errors import ShopRouterError
from shoprouter.lora import LoraRouter, read_lora
from shoprouter.model import Checkpoint
from shoprouter.train import TrainConfig, cosine_with_warmup, cycle_end, cyclic_lr, train

from .test_cli import assert_one_line_error, run


def test_one_cycle_is_the_recipe_schedule():
    assert [cyclic_lr(s, 100, 0.1, 1, []) for s in range(100)] == [cosine_with_warmup(s, 100, 0.1) for s in range(100)]


def test_cycles_restart_warm_up_and_decay_to_zero():
    total, cycles, snapshots = 90, 3, []
    lrs = []
    for step in range(total):
        lrs.append(cyclic_lr(step, total, 0.1, cycles, snapshots))
        if len(snapshots) < cycles - 1 and step + 1 >= cycle_end(total, cycles, snapshots):
            snapshots.append(step + 1)
    assert snapshots == [30, 60]
    for start in (0, 30, 60):  # each cycle: warmup over 3 steps to the peak, then cosine down to ~0
        cycle = lrs[start:start + 30]
        assert cycle[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
        assert all(a >= b for a, b in zip(cycle[2:], cycle[3:], strict=False))
        assert cycle[-1] < 0.01
    assert cyclic_lr(total, total, 0.1, cycles, snapshots) == 0.0


def test_cycles_follow_a_refitted_total():
    # the first cycle ended at step 40 of a planned 120; the budget now allows 100: 60 left for 2 cycles
    assert cycle_end(100, 3, [40]) == 70
    assert cyclic_lr(70, 100, 0.0, 3, [40]) == pytest.approx(0.0)
    assert cyclic_lr(55, 100, 0.0, 3, [40]) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.fixture(scope="module")
def cycled(tiny_base, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cycled")
    cfg = TrainConfig(epochs=3, lr=5e-3, batch_size=16, base=str(tiny_base), val_rows=18, cycles=3)
    return out, train(tiny_data, out, cfg, progress=False)


def test_each_cycle_leaves_a_snapshot_and_the_adapter_is_their_mean(cycled, tiny_base):
    out, log = cycled
    total = log["total_steps"]
    assert log["finished"] and log["snapshots"] == [round(total / 3), round(total / 3) + round((total - round(total / 3)) / 2)]
    snaps = [out / "snapshots" / f"cycle-{i}" for i in range(3)]
    assert log["averaged_snapshots"] == [str(p) for p in snaps]
    steps = [json.loads((p / "router.json").read_text())["train_steps"] for p in snaps]
    assert steps == [*log["snapshots"], total]
    # the learning rate restarted after each snapshot: the step after one runs at the warmup's first rate
    lr = {s["step"]: s["lr"] for s in log["steps"]}
    for s in log["snapshots"]:
        assert lr[s] > lr[s - 1] if s > 1 else True
    ones = [read_lora(p) for p in snaps]
    mean = read_lora(out)
    base = Checkpoint(tiny_base)
    prefix = "model." if "model.norm.weight" in base else ""
    for name in mean.factors:
        w = base.get(prefix + name).float()
        expected = sum(lora.merged(name, w) - w for lora in ones) / 3
        got = mean.merged(name, w) - w
        assert expected.abs().max() > 0
        # factors stored in bfloat16: 8 bits of mantissa
        assert torch.allclose(got, expected, atol=2e-2 * float(expected.abs().max())), name


def test_the_mean_is_calibrated_and_records_the_run(cycled, tiny_data):
    out, log = cycled
    meta = json.loads((out / "router.json").read_text())
    assert meta["train_config"]["cycles"] == 3 and meta["train_steps"] == log["total_steps"]
    assert len(meta["averaged_from"]) == 3 and meta["calibration"]["rows"] == 18
    assert meta["temperature"] == log["temperature"] != 1.0
    assert log["final_val_accuracy"] == meta["calibration"]["val_top1"]
    d = LoraRouter(adapter=out).route("where is my parcel?")
    assert abs(sum(d.scores.values()) - 1) < 1e-4


def test_resume_keeps_the_cycles_and_the_snapshots(tiny_base, tiny_data, tmp_path, monkeypatch):
    import shoprouter.train as train_module

    saved = train_module._snapshot

    def killed_after_the_first_snapshot(*args, **kwargs):
        saved(*args, **kwargs)
        raise KeyboardInterrupt  # the process stopped right after saving it, before the next checkpoint

    monkeypatch.setattr(train_module, "_snapshot", killed_after_the_first_snapshot)
    cfg = TrainConfig(epochs=3, lr=5e-3, batch_size=16, base=str(tiny_base), val_rows=8, cycles=3, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, tmp_path, cfg, progress=False)
    monkeypatch.setattr(train_module, "_snapshot", saved)
    # continued without --cycles: the checkpoint's plan (3 cycles) is kept
    resumed = train(tiny_data, tmp_path, TrainConfig(epochs=3, lr=5e-3, batch_size=16, base=str(tiny_base),
                                                     val_rows=8, checkpoint_every=1), resume=True, progress=False)
    total = resumed["total_steps"]
    assert resumed["finished"] and resumed["config"]["cycles"] == 3
    assert resumed["snapshots"] == [round(total / 3), round(total / 3) + round((total - round(total / 3)) / 2)]
    assert [s["step"] for s in resumed["steps"]] == list(range(1, total + 1))
    assert len(json.loads((tmp_path / "router.json").read_text())["averaged_from"]) == 3


def test_cycles_need_a_validation_split(tiny_base, tiny_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text((tiny_data / "train.jsonl").read_text())
    cfg = TrainConfig(epochs=1, batch_size=16, base=str(tiny_base), cycles=2)
    with pytest.raises(ShopRouterError, match="val.jsonl"):
        train(data, tmp_path / "out", cfg, progress=False)
    assert_one_line_error(run("train", "--data", data, "--out", tmp_path / "o", "--cycles", "0"), "--cycles")
