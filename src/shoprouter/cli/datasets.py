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


@data_app.command("export-corrections")
def export_corrections(
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file for the rows (text, label, history, group)."),
    store: str | None = typer.Option(None, "--store", help="Conversation store URL (as for `shoprouter serve`; "
                                     "default: the SQLite file in $SHOPROUTER_HOME or ~/.local/share/shoprouter)."),
    train_set: Path | None = typer.Option(None, "--train-set", help="Also write a dataset directory for continued "
                                          "training: the corrections (--repeat times) plus a replay sample of "
                                          "--replay-from's train.jsonl, and its val.jsonl."),
    replay_from: Path | None = typer.Option(None, "--replay-from", help="The original dataset directory."),
    replay: int = typer.Option(400, "--replay", min=0, help="Original rows sampled into --train-set."),
    repeat: int = typer.Option(4, "--repeat", min=1, help="Copies of each correction in --train-set."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the replay sample."),
    adapter: Path | None = typer.Option(None, "--adapter", help="The adapter whose agents the corrections name "
                                        "(default: the shipped one, the seven shop agents)."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as one JSON object."),
) -> None:
    """Write the routing labels humans corrected in the console as training rows (DESIGN.md data rows)."""
    import json
    import sys

    from ..feedback import correction_rows, write_train_set
    from ..lora import adapter_registry
    from ..rows import write_rows
    from ..session import open_store

    if (train_set is None) != (replay_from is None):
        raise ShopRouterError("--train-set and --replay-from go together")
    labels = adapter_registry(adapter).labels
    st = open_store(store)
    try:
        every = correction_rows(st)
    finally:
        st.close()
    rows = [r for r in every if r.label in labels]
    other = sorted({r.label for r in every} - set(labels))
    if other:
        print(f"warning: corrections to {', '.join(other)} are left out: not agents of the adapter (--adapter "
              "names the one the service routes with)", file=sys.stderr)
    write_rows(rows, out)
    summary: dict = {"rows": len(rows), "out": str(out), "store": st.url}
    if train_set is not None:
        summary["train_set"] = write_train_set(rows, replay_from, train_set, replay, repeat, seed, labels)
    if as_json:
        print(json.dumps(summary))
        return
    print(f"{len(rows)} correction(s) written to {out}")
    if train_set is not None:
        t = summary["train_set"]
        print(f"training set in {train_set}: {t['corrections']} correction(s) x {t['repeat']} + {t['replayed']} "
              f"replayed rows; continue training with\n  shoprouter train --data {train_set} --resume-from ADAPTER "
              f"--out NEW_ADAPTER")
