"""LoRA fine-tuning on CPU (GPU when present): loss only at the decision points of the answer.

Speed levers (each measured in the README): output-head logits only at the decision points; the
declarations prefix run once per batch and shared by every suffix in it (gradients flow through it);
length-bucketed batches; all cores.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .agents import Registry, default_registry
from .errors import ShopRouterError
from .lora import META_FILE, PROMPT_VERSION, adapter_registry, check_registry, registry_from_meta
from .model import EMBEDDED, LORA_DEFAULTS, load_base, resolve_dtype
from .rows import Row, read_rows
from .scoring import Encoded, Engine


@dataclass
class TrainConfig:
    """Reference recipe defaults (r=16, alpha=32, dropout 0.05 on q,k,v,o; lr 2e-4 cosine, warmup 10 %)."""

    epochs: float = 3.0
    lr: float = 2e-4
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup: float = 0.1
    r: int = LORA_DEFAULTS["r"]
    alpha: int = LORA_DEFAULTS["lora_alpha"]
    dropout: float = LORA_DEFAULTS["lora_dropout"]
    target_modules: list[str] = field(default_factory=lambda: list(LORA_DEFAULTS["target_modules"]))
    max_minutes: float | None = None
    seed: int = 0
    base: str = EMBEDDED
    val_rows: int = 600  # validation subset scored after each epoch
    checkpoint_every: int = 50  # steps
    threads: int | None = None
    prefix_grad: bool = False  # backpropagate through the shared prefix too (about 1.5x slower per step)
    dtype: str = "auto"  # base weights and matmuls: bfloat16 where the hardware has it (LoRA weights stay float32)


def bucketed_batches(encoded: list[Encoded], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches by length, cut into batches, shuffle the batches."""
    idx = list(range(len(encoded)))
    rng.shuffle(idx)
    window = batch_size * 50
    batches = []
    for s in range(0, len(idx), window):
        chunk = sorted(idx[s:s + window], key=lambda i: len(encoded[i].ids))
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def decision_loss(engine: Engine, batch: list[Encoded], prefix_grad: bool = True) -> torch.Tensor:
    """Cross-entropy over the full vocabulary at each decision point on the target's path (mean).

    The declarations prefix runs once per batch with the current adapter and its keys/values are shared
    by every suffix; with `prefix_grad=False` it runs without building a graph and without dropout (the
    adapter still shapes it, exactly as at routing time, but the loss does not backpropagate into it;
    dropout there would only add noise; skipping its random masks made steps ~7 % faster in an ad-hoc test).
    """
    if prefix_grad and torch.is_grad_enabled():
        prefix = engine.encode_prefix()
    else:
        was_training = engine.model.training
        engine.model.eval()
        try:
            with torch.no_grad():
                prefix = engine.encode_prefix()
        finally:
            engine.model.train(was_training)
    logits, rows = engine.point_logits(batch, prefix=prefix, full_vocab=True)
    sel, targets = [], []
    for enc, m_rows in zip(batch, rows, strict=True):
        path = engine.tree.paths[enc.label]
        for p_i, _child in engine.tree.steps(enc.label):
            point = engine.tree.points[p_i]
            sel.append(m_rows[p_i])
            targets.append(path[len(point.path)])
    sel_t = torch.tensor(sel, device=logits.device)
    return torch.nn.functional.cross_entropy(logits[sel_t].float(), torch.tensor(targets, device=logits.device))


def autocast(device: torch.device, dtype: str):
    """Mixed precision for a bf16 base: matmuls in bf16, float32 LoRA master weights; a no-op for float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def accuracy(engine: Engine, encoded: list[Encoded], batch_size: int = 32) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy of the decision-point scores (no threshold) and the label log-probs [N, L]."""
    was_training = engine.model.training
    engine.model.eval()
    outs = []
    dtype = "bfloat16" if engine.model.get_input_embeddings().weight.dtype == torch.bfloat16 else "float32"
    with torch.no_grad(), autocast(engine.device, dtype):
        prefix = engine.encode_prefix()
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        for s in range(0, len(order), batch_size):
            chunk = [encoded[i] for i in order[s:s + batch_size]]
            logits, rows = engine.point_logits(chunk, prefix=prefix)
            outs.append(engine.label_log_probs(logits.float(), rows))
    engine.model.train(was_training)
    logp = torch.cat(outs) if outs else torch.zeros(0)
    inv = torch.empty(len(order), dtype=torch.long)
    inv[torch.tensor(order)] = torch.arange(len(order))
    logp = logp[inv]
    gold = torch.tensor([e.label for e in encoded])
    return float((logp.argmax(-1) == gold).float().mean()), logp


def fit_temperature(logp: torch.Tensor, gold: torch.Tensor) -> float:
    """Temperature scaling on validation log-probs (minimise NLL over log T)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logp / log_t.exp(), gold)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


FIT_AFTER_STEPS = 20  # steps timed before the schedule is first fitted to --max-minutes
FIT_AFTER_SHARE = 0.1  # ... or this share of the budget spent, whichever comes first (slow steps, short budget)


def cosine_with_warmup(step: int, total: int, warmup: float) -> float:
    """Learning-rate multiplier: linear warmup over `warmup` of the steps, then cosine decay to 0 at `total`."""
    n_warm = int(warmup * total)
    if step < n_warm:
        return (step + 1) / n_warm
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, total - n_warm))))


def fit_to_budget(log: dict, planned: int, step: int, budget_s: float, steps_per_epoch: int, n_val: int,
                  batch_size: int) -> int:
    """The number of steps that fits the time budget (validation passes included), at most `planned`.

    Uses the median time of the recent steps, so it follows the machine's load in both directions (a burst
    of other work shrinks the plan only while it lasts); never below the current step + 1. The cosine
    schedule follows the fitted total, so a time-limited run still decays its learning rate to 0.
    """
    recent = [batch_size / s["examples_per_s"] for s in log["steps"][-100:] if s["examples_per_s"] > 0]
    if not recent:
        return planned
    per_step = sorted(recent)[len(recent) // 2]
    n_val_passes = 1 + max(0, planned - step) // steps_per_epoch  # per epoch, plus the final calibration
    val_s = n_val_passes * (n_val / batch_size) * per_step / 3  # a no-grad pass costs about a third of a step
    left = budget_s - log["elapsed_s"] - val_s
    fitted = step + max(1, int(0.97 * left / per_step))
    return max(step + 1, min(planned, fitted))


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _lora_config_of(model, cfg: TrainConfig) -> TrainConfig:
    """`cfg` with the LoRA shape of the adapter that `model` continues (its rank, alpha, dropout and layers,
    rather than the command line's defaults), so that the saved metadata says what was trained."""
    lora = model.peft_config["default"]
    return replace(cfg, r=int(lora.r), alpha=int(lora.lora_alpha), dropout=float(lora.lora_dropout),
                   target_modules=sorted(lora.target_modules))


def _write_meta(out: Path, registry: Registry, cfg: TrainConfig, temperature: float, extra: dict) -> None:
    meta = {"prompt_version": PROMPT_VERSION, "base": cfg.base, "temperature": temperature,
            "agents": registry.to_dict()["agents"], "train_config": asdict(cfg), **extra}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig, registry: Registry | None = None,
          resume: bool = False, resume_from: Path | None = None, extra_rows: list[Row] | None = None,
          progress: bool = True) -> dict:
    """Train a LoRA adapter on DIR/train.jsonl (validating on DIR/val.jsonl); write it to out_dir.

    Returns the training log (also written to out_dir/train_log.json). Checkpoints go to
    out_dir/checkpoint and `resume=True` continues from there.
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from tqdm import tqdm

    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint"
    state = torch.load(ckpt / "state.pt", weights_only=False) if resume and (ckpt / "state.pt").is_file() else None
    # the agents (and their descriptions, part of the prompt) of what is continued are the ones trained on
    if state is not None and "agents" in state["log"]:
        registry = check_registry(ckpt, registry_from_meta(state["log"]), registry)
    elif resume_from is not None:
        registry = check_registry(Path(resume_from), adapter_registry(Path(resume_from)), registry)
    registry = registry or default_registry()
    labels = registry.labels
    train_path, val_path = Path(data_dir) / "train.jsonl", Path(data_dir) / "val.jsonl"
    if not train_path.is_file():
        raise ShopRouterError(f"no train.jsonl in {data_dir}; run `shoprouter data generate --out {data_dir}`")
    extra_labels = {lab for r in extra_rows or [] for lab in [r.label, *(t.label for t in r.history)] if lab}
    unknown = sorted(extra_labels - set(labels))
    if unknown:
        raise ShopRouterError(f"extra rows have labels the registry does not know: {', '.join(unknown)}; "
                              f"known: {', '.join(labels)}")
    train_rows = read_rows(train_path, labels) + list(extra_rows or [])
    val_rows = read_rows(val_path, labels) if val_path.is_file() else []
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    device = _device()
    dtype = resolve_dtype(cfg.dtype, device.type)

    base = load_base(cfg.base, dtype=dtype)
    model = base.model.to(device)
    if resume and (ckpt / "adapter_model.safetensors").is_file():
        model = PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
        cfg = _lora_config_of(model, cfg)
    elif resume_from is not None:
        model = PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
        cfg = _lora_config_of(model, cfg)
    else:
        model = get_peft_model(model, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                                 target_modules=cfg.target_modules, task_type="CAUSAL_LM"))
    engine = Engine(model, base.tokenizer, registry)
    enc_train = [engine.encode(r.text, r.history, r.label) for r in train_rows]
    rng_val = random.Random(cfg.seed)
    val_sample = rng_val.sample(val_rows, min(cfg.val_rows, len(val_rows))) if val_rows else []
    enc_val = [engine.encode(r.text, r.history, r.label) for r in val_sample]

    steps_per_epoch = math.ceil(len(enc_train) / cfg.batch_size)
    total_steps = planned_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = {"total": total_steps}  # shrunk to fit --max-minutes once the step time is known
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, plan["total"], cfg.warmup))
    log = {"config": asdict(cfg), "n_train": len(enc_train), "n_val_scored": len(enc_val), "device": str(device), "dtype": dtype,
           "threads": torch.get_num_threads(), "trainable_params": sum(p.numel() for p in params),
           "prefix_tokens": len(engine.prefix_ids), "total_steps": total_steps, "steps": [], "epochs": [],
           "elapsed_s": 0.0, "agents": registry.to_dict()["agents"]}
    step = 0
    if state is not None:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, log = state["step"], state["log"]
        plan["total"] = total_steps = log["total_steps"]
    model.train()
    start = time.time() - log["elapsed_s"]
    bar = tqdm(total=total_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    stopped_early = False
    fitted = False
    first_step = step
    while step < total_steps:
        epoch = step // steps_per_epoch
        batches = bucketed_batches(enc_train, cfg.batch_size, random.Random(cfg.seed * 1000 + epoch))
        for b_i in range(step % steps_per_epoch, len(batches)):
            if step >= total_steps:
                break
            t0 = time.time()
            with autocast(device, dtype):
                loss = decision_loss(engine, [enc_train[i] for i in batches[b_i]], cfg.prefix_grad)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            dt = time.time() - t0
            log["steps"].append({"step": step, "loss": round(loss.item(), 5), "lr": sched.get_last_lr()[0],
                                 "examples_per_s": round(len(batches[b_i]) / dt, 2)})
            log["elapsed_s"] = time.time() - start
            bar.set_postfix(loss=f"{loss.item():.4f}", ex_s=f"{len(batches[b_i]) / dt:.1f}")
            bar.update(1)
            if step % steps_per_epoch == 0 or step == total_steps:
                acc, _ = accuracy(engine, enc_val) if enc_val else (float("nan"), None)
                log["epochs"].append({"step": step, "epoch": step / steps_per_epoch, "val_accuracy": acc,
                                      "elapsed_s": round(log["elapsed_s"], 1)})
                bar.write(f"step {step}: val accuracy {acc:.4f} on {len(enc_val)} rows")
            if cfg.max_minutes is not None and (step % cfg.checkpoint_every == 0 or not fitted and (
                    step - first_step >= FIT_AFTER_STEPS or log["elapsed_s"] >= FIT_AFTER_SHARE * cfg.max_minutes * 60)):
                fitted = True
                total_steps = plan["total"] = log["total_steps"] = fit_to_budget(
                    log, planned_steps, step, cfg.max_minutes * 60, steps_per_epoch, len(enc_val), cfg.batch_size)
                bar.total = total_steps
            if step % cfg.checkpoint_every == 0:
                _checkpoint(model, opt, sched, step, log, ckpt)
            if cfg.max_minutes is not None and log["elapsed_s"] > cfg.max_minutes * 60:
                stopped_early = True
                break
        if stopped_early:
            break
    bar.close()
    _checkpoint(model, opt, sched, step, log, ckpt)
    log["stopped_early"] = stopped_early
    log["finished"] = step >= total_steps
    # calibrate on the validation subset and save the final adapter
    temperature = 1.0
    if enc_val:
        acc, logp = accuracy(engine, enc_val)
        gold = torch.tensor([e.label for e in enc_val])
        temperature = fit_temperature(logp, gold)
        log["final_val_accuracy"] = acc
    log["temperature"] = temperature
    model.save_pretrained(str(out_dir))
    extra = {"train_steps": step, "train_rows": len(enc_train)}
    if resume_from is not None:
        extra["resumed_from"] = str(resume_from)
    _write_meta(out_dir, registry, cfg, temperature, extra)
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    for junk in ("README.md",):
        (out_dir / junk).unlink(missing_ok=True)
    return log


def _checkpoint(model, opt, sched, step: int, log: dict, ckpt: Path) -> None:
    """Write adapter + optimizer state atomically (temp dir, then rename)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "log": log}, tmp / "state.pt")
    shutil.rmtree(ckpt, ignore_errors=True)
    os.replace(tmp, ckpt)
