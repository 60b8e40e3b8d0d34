"""Benchmarks: single-message latency, batched throughput and peak RSS per router, each in a fresh process.

Also the reference way of routing with a fine-tuned function-calling model: PEFT `generate(max_new_tokens=30)`
on the whole prompt, then a regex over the generated text.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

from .rows import Row


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_router(name: str, rows: Sequence[Row], n_single: int, n_batch: int, batch_size: int,
                 router_kwargs: dict | None = None, passes: int = 3) -> dict:
    """Load one router and time it; call in a fresh process so peak RSS belongs to this router alone.

    Batched throughput is measured in `passes` passes over the same `n_batch` messages and reported as their
    median (each pass's figure is kept too): on a shared machine one pass can land in a slow minute."""
    from .router import get_router

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    router = get_router(name, **(router_kwargs or {}))
    load_s = time.perf_counter() - t0
    texts = [r.text for r in rows]
    hists = [r.history for r in rows]
    for i in range(min(3, len(texts))):  # warm-up
        router.route(texts[i], hists[i])
    single = []
    for i in range(n_single):
        j = i % len(texts)
        t = time.perf_counter()
        router.route(texts[j], hists[j])
        single.append((time.perf_counter() - t) * 1000)
    bt, bh = [texts[i % len(texts)] for i in range(n_batch)], [hists[i % len(texts)] for i in range(n_batch)]
    rates = []
    for _ in range(passes if n_batch else 0):
        t = time.perf_counter()
        for s in range(0, n_batch, batch_size):
            router.route_batch(bt[s:s + batch_size], bh[s:s + batch_size])
        rates.append(round(n_batch / (time.perf_counter() - t), 1))
    return {"router": name, "load_s": round(load_s, 2), "single_ms": _summary(single),
            "batch_size": batch_size, "throughput_msgs_per_s": float(np.median(rates)) if rates else None,
            "throughput_passes": rates,
            "rss_mb_router": round(_rss_mb() - rss0, 1), "peak_rss_mb_process": round(_peak_rss_mb(), 1),
            "threads": _threads()}


def bench_reference_generate(rows: Sequence[Row], n: int, adapter: str | None = None) -> dict:
    """The reference way: un-merged PEFT model, `generate(max_new_tokens=30)` on the full prompt, regex parse."""
    import torch

    from . import prompt
    from .lora import load_adapted_model, read_meta, registry_from_meta, shipped_adapter
    from .scoring import Engine

    path = adapter or shipped_adapter()
    from pathlib import Path

    meta = read_meta(Path(path))
    registry = registry_from_meta(meta)
    rss0 = _rss_mb()
    model, tok = load_adapted_model(meta.get("base"), Path(path), merge=False)
    engine = Engine(model, tok, registry)  # the same token ids as training (markers as single tokens)
    times, correct = [], 0
    for i in range(n):
        row = rows[i % len(rows)]
        ids = torch.tensor([engine.prefix_ids + engine.encode(row.text, row.history).ids])
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=30,
                                 do_sample=False)
        gen = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False)
        label = prompt.parse_call(gen, registry)
        times.append((time.perf_counter() - t) * 1000)
        correct += int(label == row.label)
    return {"router": "reference-generate", "single_ms": _summary(times), "accuracy_on_sample": round(correct / n, 3),
            "n": n, "rss_mb_router": round(_rss_mb() - rss0, 1), "peak_rss_mb_process": round(_peak_rss_mb(), 1),
            "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "mean": round(float(a.mean()), 2), "n": len(ms)}


def run_isolated(kind: str, data: str, **kwargs) -> dict:
    """Run one benchmark in a child process (clean RSS) and return its JSON result."""
    cmd = [sys.executable, "-m", "shoprouter.benchmark", kind, data, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"router": kwargs.get("name", kind), "error": tail[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(kind: str, data: str, kwargs_json: str) -> None:
    from .rows import read_rows

    kwargs = json.loads(kwargs_json)
    rows = read_rows(data, kwargs.pop("labels", None))
    if kind == "router":
        res = bench_router(kwargs["name"], rows, kwargs["n_single"], kwargs["n_batch"], kwargs["batch_size"],
                           kwargs.get("router_kwargs"), kwargs.get("passes", 3))
    else:
        res = bench_reference_generate(rows, kwargs["n"], kwargs.get("adapter"))
    print(json.dumps(res))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
