"""Where the lora router's memory goes: process RSS after each loading stage and after routing messages.

    python scripts/memory_profile.py [--messages 400] [--pad-to 16] [--quantize auto|int8|none] [--json]
    python scripts/memory_profile.py --batch-size 32 --messages 2048 --data gen/test.jsonl

Reads /proc/self/status (Linux): VmRSS (resident now), VmHWM (peak so far), RssAnon (heap and other private
memory), RssFile (mapped files: libraries). Messages come from the realistic dev set (or `--data`), routed
one at a time as a service would, or in batches (`--batch-size`, as `route_batch` does: length-bucketed, in
forwards of at most `--batch-tokens` suffix tokens).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STAGES: list[dict] = []


def mark(stage: str) -> None:
    status = Path("/proc/self/status").read_text()

    def mb(key: str) -> int:
        return int(status.split(key + ":")[1].split()[0]) // 1024

    row = {"stage": stage, "rss_mb": mb("VmRSS"), "peak_mb": mb("VmHWM"), "anon_mb": mb("RssAnon"),
           "file_mb": mb("RssFile")}
    STAGES.append(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--pad-to", type=int, default=None, help="the router's pad_to (default: the router's own)")
    ap.add_argument("--quantize", choices=["auto", "int8", "none"], default="auto",
                    help="the router's quantize option (default auto: int8 on x86; none: bf16/float)")
    ap.add_argument("--batch-size", type=int, default=1, help="messages per call (default 1: one at a time)")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="the router's batch_tokens: suffix tokens per forward (default: the router's own)")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "realistic_dev.jsonl",
                    help="JSONL rows to route (default: the realistic dev set)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    mark("python")
    import torch  # noqa: F401

    mark("import torch")
    from shoprouter.agents import default_registry
    from shoprouter.lora import (
        BATCH_TOKENS,
        default_pad_to,
        lean_runtime,
        length_buckets,
        read_lora,
        resolve_quantize,
        shipped_adapter,
    )
    from shoprouter.model import (
        load_fast_tokenizer,
        release_freed_memory,
        resolve_base,
        resolve_dtype,
        unfragmented_loading,
    )
    from shoprouter.rows import read_rows
    from shoprouter.scoring import Engine

    mark("import shoprouter (+ transformers config)")
    dtype = resolve_dtype("auto")
    quantize = resolve_quantize(None if args.quantize == "none" else args.quantize, "lean")
    with unfragmented_loading():  # as LoraRouter loads; on leaving, glibc hands back what loading freed
        where = resolve_base(None, dtype)
        tokenizer = load_fast_tokenizer(where)
        mark("tokenizer")
        engine = Engine(None, tokenizer, default_registry())
        built = lean_runtime(where, read_lora(shipped_adapter()), dtype, quantize, engine.prefix_ids)
        mark(f"layer weights ({quantize or dtype}, LoRA merged, "
             f"{'smoothed, calibrated' if quantize else 'prepacked'})")
        engine.set_runtime(*built)
        del built
        engine.pad_multiple = default_pad_to(engine) if args.pad_to is None else args.pad_to
        engine.prefix_cache()
    mark("prefix cache")
    rows = read_rows(args.data)
    budget = BATCH_TOKENS if args.batch_tokens is None else args.batch_tokens
    how = f"one at a time, pad_to={engine.pad_multiple}" if args.batch_size == 1 else \
        f"in batches of {args.batch_size}, pad_to={engine.pad_multiple}, {budget} tokens"
    checkpoints = {50, 200, args.messages} if args.batch_size == 1 else \
        {*range(512, args.messages + 1, 512), args.messages}
    for start in range(0, args.messages, args.batch_size):
        chunk = [rows[i % len(rows)] for i in range(start, min(start + args.batch_size, args.messages))]
        encoded = [engine.encode(row.text, row.history) for row in chunk]
        for bucket in length_buckets([len(e.ids) for e in encoded], args.batch_size, max_tokens=budget):
            engine.score([encoded[i] for i in bucket])
        if len(chunk) > 1:
            release_freed_memory()  # as LoraRouter.scores_batch does after a batch
        done = start + len(chunk)
        if any(start < c <= done for c in checkpoints):
            mark(f"{done} messages routed ({how})")
    if args.json:
        print(json.dumps(STAGES, indent=1))
        return
    print(f"{'stage':<52} {'RSS':>6} {'peak':>6} {'anon':>6} {'file':>6}  (MB)")
    for s in STAGES:
        print(f"{s['stage']:<52} {s['rss_mb']:>6} {s['peak_mb']:>6} {s['anon_mb']:>6} {s['file_mb']:>6}")


if __name__ == "__main__":
    main()
