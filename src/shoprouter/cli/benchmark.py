"""`shoprouter bench`: latency, throughput and memory of every router on this machine, in one run."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from . import app


@app.command()
def bench(
    data: Path = typer.Option(None, "--data", help="Messages to route (JSONL rows). Default: the realistic dev set."),
    routers: str = typer.Option("lora,keyword,rules,tfidf,embedding",
                                help="Comma-separated router names; NAME:KEY=VALUE:… passes options, e.g. "
                                     "lora:forward=hf:dtype=float32 (the transformers forward in float32)."),
    n_single: int = typer.Option(200, "--n-single", help="Messages routed one at a time."),
    n_batch: int = typer.Option(512, "--n-batch", help="Messages routed in batches."),
    batch_size: int = typer.Option(32, "--batch-size"),
    passes: int = typer.Option(3, "--passes", min=1, help="Passes over the batched messages; throughput is their median."),
    reference: int = typer.Option(30, "--reference-n", help="Messages for the reference generate+regex way (0: skip)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter directory (default: the shipped one)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Benchmark routers (each in a fresh process) and the reference generate+regex way."""
    from rich.console import Console
    from rich.table import Table

    from ..benchmark import run_isolated
    from ..errors import InputError
    from ..lora import adapter_registry
    from ..router import ROUTER_NAMES
    from ..rows import read_rows
    from .routing import parse_options, router_labels

    path = data or Path(__file__).resolve().parents[3] / "data" / "realistic_dev.jsonl"
    specs = [n.strip() for n in routers.split(",") if n.strip()]
    parsed = []
    for spec in specs:
        name, *opts = spec.split(":")
        if name not in ROUTER_NAMES:
            raise InputError(f"unknown router {name!r}; choose from {', '.join(ROUTER_NAMES)}")
        kw = parse_options(opts)
        if adapter and name == "lora":
            kw["adapter"] = str(adapter)
        parsed.append((spec, name, kw))
    # rows (and history) may carry the labels of any router benchmarked (each with its own agents); the reference
    # way's accuracy compares the adapter's decisions with them, so its rows must carry the adapter's labels
    adapter_labels = adapter_registry(adapter).labels
    labels = list(dict.fromkeys(lb for _, name, kw in parsed for lb in router_labels(name, kw.get("adapter"), kw)))
    # validate before spawning anything (rows that carry the adapter's labels carry the union's too)
    if reference:
        try:
            read_rows(path, adapter_labels)
        except InputError as e:
            raise InputError(f"{e}; the reference way (--reference-n) runs the adapter "
                             f"{adapter or 'shipped with shoprouter'}, which routes to {', '.join(adapter_labels)}: "
                             "pass --adapter for one trained on these labels, or --reference-n 0") from None
        labels = list(dict.fromkeys([*labels, *adapter_labels]))
    else:
        read_rows(path, labels)
    results = []
    for spec, name, kw in parsed:
        res = run_isolated("router", str(path), name=name, n_single=n_single, n_batch=n_batch,
                           batch_size=batch_size, router_kwargs=kw or None, passes=passes, labels=labels)
        res["router"] = spec
        results.append(res)
    if reference:
        results.append(run_isolated("reference", str(path), n=reference, adapter=str(adapter) if adapter else None,
                                    labels=adapter_labels))
    if json_out:
        print(json.dumps({"data": str(path), "results": results}))
        return
    table = Table(title=f"shoprouter bench on {path.name}")
    for col in ("router", "p50 ms", "p95 ms", "msgs/s batched", "router RSS MB", "peak RSS MB", "note"):
        table.add_column(col)
    for r in results:
        if "error" in r:
            table.add_row(r["router"], "-", "-", "-", "-", "-", r["error"])
            continue
        table.add_row(r["router"], str(r["single_ms"]["p50"]), str(r["single_ms"]["p95"]),
                      str(r.get("throughput_msgs_per_s", "-")), str(r["rss_mb_router"]),
                      str(r["peak_rss_mb_process"]), f"acc {r['accuracy_on_sample']}" if "accuracy_on_sample" in r else "")
    Console().print(table)
