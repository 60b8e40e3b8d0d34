"""Where the lora router's memory goes: process RSS after each loading stage and after routing messages.

    python scripts/memory_profile.py [--messages 400] [--pad-to 16] [--quantize auto|int8|none] [--json]

Reads /proc/self/status (Linux): VmRSS (resident now), VmHWM (peak so far), RssAnon (heap and other private
memory), RssFile (mapped files: libraries). Messages come from the
realistic dev set, routed one at a time as a service would.
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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    mark("python")
    import torch  # noqa: F401

    mark("import torch")
    from shoprouter.agents import default_registry
    from shoprouter.lora import PAD_TO, lean_runtime, read_lora, resolve_quantize, shipped_adapter
    from shoprouter.model import load_fast_tokenizer, release_freed_memory, resolve_base, resolve_dtype
    from shoprouter.rows import read_rows
    from shoprouter.scoring import Engine

    mark("import shoprouter (+ transformers config)")
    dtype = resolve_dtype("auto")
    quantize = resolve_quantize(None if args.quantize == "none" else args.quantize, "lean")
    where = resolve_base(None, dtype)
    tokenizer = load_fast_tokenizer(where)
    mark("tokenizer")
    engine = Engine(None, tokenizer, default_registry())
    built = lean_runtime(where, read_lora(shipped_adapter()), dtype, quantize, engine.prefix_ids)
    mark(f"layer weights ({quantize or dtype}, LoRA merged, {'smoothed, calibrated' if quantize else 'prepacked'})")
    engine.set_runtime(*built)
    del built
    engine.pad_multiple = PAD_TO if args.pad_to is None else args.pad_to
    engine.prefix_cache()
    release_freed_memory()  # as LoraRouter does once it is built
    mark("prefix cache")
    rows = read_rows(Path(__file__).resolve().parents[1] / "data" / "realistic_dev.jsonl")
    for i in range(args.messages):
        row = rows[i % len(rows)]
        engine.score([engine.encode(row.text, row.history)])
        if i + 1 in (50, 200) or i + 1 == args.messages:
            mark(f"{i + 1} messages routed (pad_to={engine.pad_multiple})")
    if args.json:
        print(json.dumps(STAGES, indent=1))
        return
    print(f"{'stage':<52} {'RSS':>6} {'peak':>6} {'anon':>6} {'file':>6}  (MB)")
    for s in STAGES:
        print(f"{s['stage']:<52} {s['rss_mb']:>6} {s['peak_mb']:>6} {s['anon_mb']:>6} {s['file_mb']:>6}")


if __name__ == "__main__":
    main()
