"""Average trained adapters into one: the mean of their LoRA updates, as one plain LoRA adapter, recalibrated.

Runs that differ only in seed (or rank) land on different adapters that are each right on rows the others get
wrong; the mean of their weight updates often routes better than either, at no cost when routing (the update
is merged into the weights at load). `scripts/compare_adapters.py` says whether it does, beyond chance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import ShopRouterError
from .lora import META_FILE, LoraRouter, adapter_error, read_lora, read_meta
from .rows import Row

STORE_DTYPES = ("float32", "bfloat16")
_RECORD = ("train_config", "train_steps", "train_rows", "temperature", "resumed_from", "averaged_from")
_KEY = "base_model.model.model.{}.lora_{}.weight"  # PEFT's name for a decoder weight's factor A or B


def average_adapters(adapters: Sequence[Path], out: Path, val_rows: Sequence[Row], rank: int | None = None,
                     dtype: str = "float32") -> dict:
    """Write to `out` an adapter whose update of every weight is the mean of the adapters' updates, calibrated
    on `val_rows` (`calibrate`); return its router.json. `rank`: keep only the mean update's top singular
    directions (`truncate`), for a smaller file; None keeps it exact. `dtype`: how the factors are stored,
    float32 or bfloat16 (half the file; they are merged in float32 either way).

    Each update is scale·B·A; the factors are stacked, A = [A_1; …; A_n] and B = [s_1·B_1, …, s_n·B_n] / n,
    with r = Σ r_i (before any truncation) and lora_alpha = r (scale 1), so PEFT's merge and the lean loader
    both add exactly the mean. A weight that some adapter does not adapt counts as a zero update there. The adapters must be plain LoRA
    adapters for the same agents and prompt format on the same base.
    """
    from safetensors.torch import save_file

    adapters = [Path(a) for a in adapters]
    if len(adapters) < 2:
        raise ShopRouterError("averaging needs at least two adapters")
    if not val_rows:
        raise ShopRouterError("no validation rows to calibrate the average on")
    if dtype not in STORE_DTYPES:
        raise ShopRouterError(f"unknown storage dtype {dtype!r}; use {' or '.join(STORE_DTYPES)}")
    if rank is not None and rank < 1:
        raise ShopRouterError(f"the rank to keep must be at least 1, got {rank}")
    if len({a.resolve() for a in adapters}) != len(adapters):
        raise ShopRouterError("the same adapter is given twice")
    if Path(out).resolve() in {a.resolve() for a in adapters}:
        raise ShopRouterError(f"--out {out} is one of the adapters being averaged; write the average elsewhere")
    metas = [read_meta(a) for a in adapters]
    for a, meta in zip(adapters[1:], metas[1:], strict=True):
        if meta["agents"] != metas[0]["agents"]:
            raise ShopRouterError(f"adapter {a} was trained for other agents than {adapters[0]}")
        if meta.get("base") != metas[0].get("base"):
            raise ShopRouterError(f"adapter {a} was trained on base {meta.get('base')!r}, "
                                  f"{adapters[0]} on {metas[0].get('base')!r}")
    loras = []
    for a in adapters:
        lora = read_lora(a)
        if lora is None:
            raise ShopRouterError(f"adapter {a} is not a plain LoRA adapter (DoRA, biases, other layers …); "
                                  "only plain ones can be averaged")
        loras.append(lora)
    ranks = [lora.rank for lora in loras]
    r = min(sum(ranks), rank or sum(ranks))
    names = sorted(set().union(*(lora.factors for lora in loras)))
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        pairs = [lora.factors.get(name) for lora in loras]
        n_in, n_out = next((a.shape[1], b.shape[0]) for a, b in filter(None, pairs))
        blocks_a, blocks_b = [], []
        for lora, r_i, pair, adapter in zip(loras, ranks, pairs, adapters, strict=True):
            if pair is None:  # not adapted by this one: a zero update of its rank
                pair = torch.zeros(r_i, n_in), torch.zeros(n_out, r_i)
            a, b = pair
            if a.shape[1] != n_in or b.shape[0] != n_out:
                raise ShopRouterError(f"adapter {adapter}'s {name} has another shape than {adapters[0]}'s: "
                                      "the adapters were trained on different bases")
            blocks_a.append(a.float())
            blocks_b.append(b.float() * (lora.scale / len(loras)))
        a, b = torch.cat(blocks_a), torch.cat(blocks_b, dim=1)
        if r < a.shape[0]:
            a, b = truncate(a, b, r)
        module = name.removesuffix(".weight")
        tensors[_KEY.format(module, "A")] = a.to(getattr(torch, dtype)).contiguous()
        tensors[_KEY.format(module, "B")] = b.to(getattr(torch, dtype)).contiguous()
    try:
        config = json.loads((adapters[0] / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise adapter_error(adapters[0], exc) from None
    config.update(r=r, lora_alpha=r, use_rslora=False,
                  target_modules=sorted({n.rsplit(".", 2)[-2] for n in names}))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # what the inputs share (checked above); each input's own training record goes under averaged_from
    meta = {k: metas[0][k] for k in ("prompt_version", "base", "agents") if k in metas[0]}
    meta["averaged_from"] = [{"adapter": str(a), **{k: m[k] for k in _RECORD if k in m}}
                             for a, m in zip(adapters, metas, strict=True)]
    meta["averaged_rank"] = {"sum": sum(ranks), "kept": r, "stored_as": dtype}
    meta["temperature"] = 1.0  # until calibrated, next
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    calibrate(out, val_rows)
    return read_meta(out)


def truncate(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of rank `rank` whose product is the best approximation of b @ a (its top singular directions)."""
    u, s, vh = torch.linalg.svd(b.double() @ a.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).float(), (u[:, :rank] * root).float()


def calibrate(adapter: Path, rows: Sequence[Row], batch_size: int = 32) -> dict:
    """Fit the adapter's temperature on `rows` (the validation split) as routed by the default router, write it
    to its router.json, and return {"temperature", "val_top1", "n"}."""
    from .train import fit_temperature

    rows = list(rows)
    if not rows:
        raise ShopRouterError("no validation rows to calibrate on")
    adapter = Path(adapter)
    router = LoraRouter(adapter=adapter, temperature=1.0, batch_size=batch_size)
    labels = router.engine.tree.labels
    logp = router.log_probs([r.text for r in rows], [r.history for r in rows])
    gold = torch.tensor([labels.index(r.label) for r in rows])
    temperature = fit_temperature(logp, gold)
    meta_path = adapter / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["temperature"] = temperature
    meta["calibration"] = {"rows": len(rows), "val_top1": round(float((logp.argmax(-1) == gold).float().mean()), 6)}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {"temperature": temperature, "val_top1": meta["calibration"]["val_top1"], "n": len(rows)}
