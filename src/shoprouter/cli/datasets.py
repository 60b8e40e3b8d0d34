"""`shoprouter data generate`: the synthetic dataset (the generator is imported only when the command runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ShopRouterError
from . import data_app


def _summary_table(card: dict, out: Path):
    """A rich table of rows per label and split from the dataset card (tolerant of missing fields)."""
    from rich.table import Table

    splits = card.get("splits") or {}
    labels = card.get("labels") or sorted({lab for s in splits.values() for lab in (s.get("per_label") or {})})
    table = Table(title=f"dataset written to {out}")
    table.add_column("label")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for lab in labels:
        counts = [int((splits[s].get("per_label") or {}).get(lab, 0)) for s in splits]
        table.add_row(lab, *map(str, counts), str(sum(counts)))
    table.add_section()
    totals = [int(splits[s].get("rows", 0)) for s in splits]
    table.add_row("[bold]rows[/]", *map(str, totals), str(sum(totals)))
    if all("groups" in splits[s] for s in splits):
        table.add_row("groups", *(str(splits[s]["groups"]) for s in splits), "")
    if all("multi_turn" in splits[s] for s in splits):
        mt = [int(splits[s]["multi_turn"]) for s in splits]
        table.add_row("multi-turn", *map(str, mt), str(sum(mt)))
    return table


@data_app.command("generate")
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for train/val/test.jsonl, card.json, README.md."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same dataset)."),
) -> None:
    """Generate the synthetic dataset (group-split train/val/test) and its card."""
    if out.exists() and not out.is_dir():
        raise ShopRouterError(f"--out {out} exists and is not a directory")
    try:
        from .. import data
    except ImportError as exc:
        raise ShopRouterError(f"the dataset generator is not available ({exc})") from None
    card = data.generate(out, seed=seed)
    from rich.console import Console

    Console().print(_summary_table(card if isinstance(card, dict) else {}, out))
