"""`shoprouter train`: LoRA fine-tuning of the router."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ShopRouterError
from ..model import LORA_DEFAULTS, LORA_LAYERS
from . import app


def parse_targets(value: str) -> list[str]:
    """The `--targets` list: known layer names, each once, at least one."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in LORA_LAYERS]
    if not names or unknown or len(set(names)) != len(names):
        raise ShopRouterError(f"--targets must list distinct layers from {','.join(LORA_LAYERS)}; got {value!r}")
    return names


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Dataset directory with train.jsonl and val.jsonl."),
    out: Path = typer.Option(..., "--out", help="Where to write the adapter, its metadata and training log."),
    epochs: float = typer.Option(3.0, help="Passes over the training data (fractions allowed)."),
    lr: float = typer.Option(2e-4, help="Peak learning rate (cosine schedule, 10 % warmup)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per optimiser step (share one prefix pass)."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Stop (with a checkpoint) after this long."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint."),
    resume_from: Path | None = typer.Option(None, "--resume-from", help="Start from an existing adapter."),
    extra: Path | None = typer.Option(None, "--extra", help="Extra rows (JSONL) mixed into the training data."),
    base: str = typer.Option("embedded", help="Base model: 'embedded', a local path or a Hugging Face id."),
    seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="CPU threads (default: all cores)."),
    prefix_grad: bool = typer.Option(False, "--prefix-grad/--no-prefix-grad",
                                     help="Backpropagate through the shared declarations prefix (slower)."),
    dtype: str = typer.Option("auto", help="auto (bfloat16 where the CPU/GPU has it, else float32), float32, bfloat16."),
    rank: int = typer.Option(LORA_DEFAULTS["r"], "--rank",
                             help="LoRA rank r (alpha = 2r, the recipe's ratio: 16 and 32 by default)."),
    targets: str = typer.Option(",".join(LORA_DEFAULTS["target_modules"]), "--targets",
                                help="Comma-separated layers LoRA adapts: any of " + ",".join(LORA_LAYERS) + "."),
    agents: Path | None = typer.Option(None, "--agents", help="Agent registry YAML (agents: [{key, description, "
                                       "keywords}]) to train a router for your own agents (default: the seven "
                                       "shop agents; when continuing, the agents of what is continued)."),
    json_out: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Fine-tune the LoRA router (reference recipe defaults) and save the adapter."""
    from ..agents import load_registry
    from ..rows import read_rows
    from ..train import TrainConfig
    from ..train import train as run_train

    if not 1 <= rank <= 256:
        raise ShopRouterError(f"--rank must be a whole number from 1 to 256, got {rank}")
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_minutes=max_minutes, base=base, seed=seed,
                      threads=threads, prefix_grad=prefix_grad, dtype=dtype, target_modules=parse_targets(targets),
                      r=rank, alpha=2 * rank)
    extra_rows = read_rows(extra) if extra else None
    registry = load_registry(agents) if agents is not None else None
    log = run_train(data, out, cfg, registry=registry, resume=resume, resume_from=resume_from, extra_rows=extra_rows)
    summary = {k: log.get(k) for k in ("n_train", "total_steps", "elapsed_s", "epochs", "final_val_accuracy",
                                       "temperature", "stopped_early", "finished")}
    summary["adapter"] = str(out)
    print(json.dumps(summary, indent=None if json_out else 2))


@app.command()
def average(
    adapters: list[Path] = typer.Argument(..., help="Two or more trained adapter directories."),
    out: Path = typer.Option(..., "--out", help="Where to write the averaged adapter."),
    data: Path = typer.Option(..., "--data", help="Dataset directory whose val.jsonl calibrates the result."),
    rank: int | None = typer.Option(None, "--rank", help="Keep the mean update's top RANK singular directions "
                                    "(a smaller file; default: exact, rank = the sum of the adapters' ranks)."),
    dtype: str = typer.Option("float32", "--dtype", help="Store the factors as float32 or bfloat16 (half the file)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Average adapters (the mean of their LoRA updates) into one, recalibrated on the validation split."""
    from ..average import average_adapters
    from ..lora import adapter_registry
    from ..rows import read_rows

    val = Path(data) / "val.jsonl"
    if not val.is_file():
        raise ShopRouterError(f"no val.jsonl in {data}; the averaged adapter is calibrated on the validation split")
    labels = adapter_registry(Path(adapters[0])).labels
    meta = average_adapters(adapters, out, read_rows(val, labels), rank, dtype)
    summary = {"adapter": str(out), "averaged": [str(a) for a in adapters], "rank": meta["averaged_rank"]["kept"],
               "temperature": meta["temperature"], **meta["calibration"]}
    print(json.dumps(summary, indent=None if json_out else 2))
