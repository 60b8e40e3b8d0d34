"""Evaluation: contract metrics (DESIGN.md eval JSON), reports with plots, and router comparisons."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ShopRouterError
from .router import Decision, Router
from .rows import Row

ECE_BINS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_LATENCY_SAMPLE = 50


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """Equal-width-bin ECE: sum over bins of (bin share) * |accuracy - mean confidence|."""
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(confidences, correct, bins) if b["n"]) / max(1, len(confidences)))


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin [i/bins, (i+1)/bins): count, accuracy and mean confidence (the last bin includes 1)."""
    conf = np.asarray(confidences, dtype=float)
    corr = np.asarray(correct, dtype=float)
    idx = np.minimum((conf * bins).astype(int), bins - 1) if len(conf) else np.zeros(0, dtype=int)
    out = []
    for i in range(bins):
        m = idx == i
        n = int(m.sum())
        out.append({"lo": i / bins, "hi": (i + 1) / bins, "n": n,
                    "accuracy": float(corr[m].mean()) if n else 0.0,
                    "confidence": float(conf[m].mean()) if n else 0.0})
    return out


def _percentiles(values: Sequence[float]) -> dict:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0}
    arr = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3),
            "mean": round(float(arr.mean()), 3)}


def _sample_indices(n: int, k: int) -> list[int]:
    """k evenly spaced indices in range(n) (deterministic, covers the file)."""
    if k <= 0 or n == 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k)})


def route_rows(router: Router, rows: Sequence[Row], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: bool = False) -> list[Decision]:
    """Every row's decision (with its history), from `route_batch` calls of `batch_size` rows."""
    decisions: list[Decision] = []
    batches = range(0, len(rows), batch_size)
    if progress:
        from rich.progress import track

        batches = track(batches, description=f"routing ({router.name})", transient=True)
    for i in batches:
        chunk = rows[i:i + batch_size]
        decisions.extend(router.route_batch([r.text for r in chunk], [r.history for r in chunk]))
    return decisions


def evaluate(router: Router, rows: Sequence[Row], batch_size: int = DEFAULT_BATCH_SIZE,
             latency_sample: int = DEFAULT_LATENCY_SAMPLE, progress: bool = False) -> dict:
    """Route every row (with its history) and compute the DESIGN.md eval JSON plus extras.

    Accuracy, F1, confusion and ECE come from batched routing (`route_batch`, `batch_size` rows at a time).
    `latency_ms` is measured on single-message `route` calls over an evenly spaced sample of
    `latency_sample` rows (what a caller routing one message waits); the batched cost per message is in
    `batch_latency_ms_per_message`. ECE compares the top probability with whether the top label is the gold
    label (calibration of the scores; the clarify threshold is not applied there).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    rows = list(rows)
    if not rows:
        raise ShopRouterError("no rows to evaluate")
    if batch_size < 1:
        raise ShopRouterError("batch size must be at least 1")
    labels = list(router.labels)
    unknown = sorted({r.label for r in rows} - set(labels))
    if unknown:
        raise ShopRouterError(f"rows have labels the router does not know: {', '.join(unknown)}")

    start = time.perf_counter()
    decisions = route_rows(router, rows, batch_size, progress)
    batch_total_ms = (time.perf_counter() - start) * 1000

    single = []
    for i in _sample_indices(len(rows), latency_sample):
        t0 = time.perf_counter()
        router.route(rows[i].text, rows[i].history)
        single.append((time.perf_counter() - t0) * 1000)

    y_true = [r.label for r in rows]
    y_pred = [d.decision for d in decisions]
    prec, rec, f1, sup = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = sorted(set(y_true) | set(y_pred), key=labels.index)
    top = [max(d.scores, key=d.scores.__getitem__) for d in decisions]
    conf = [float(d.scores[t]) for d, t in zip(decisions, top, strict=True)]
    top_correct = [t == y for t, y in zip(top, y_true, strict=True)]
    multi = [i for i, r in enumerate(rows) if r.history]
    result = {
        "n": len(rows),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)), 6),
        "per_label": {lab: {"precision": round(float(p), 6), "recall": round(float(r), 6),
                            "f1": round(float(f), 6), "support": int(s)}
                      for lab, p, r, f, s in zip(labels, prec, rec, f1, sup, strict=True)},
        "confusion": {"labels": labels,
                      "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        "latency_ms": _percentiles(single),
        "ece": round(expected_calibration_error(conf, top_correct), 6),
        "router": router.name,
        "latency_mode": f"single-message route() calls on {len(single)} evenly spaced rows; "
                        f"metrics from route_batch with batch size {batch_size}",
        "batch_size": batch_size,
        "batch_latency_ms_per_message": round(batch_total_ms / len(rows), 3),
        "multi_turn": {"n": len(multi),
                       "accuracy": round(sum(y_pred[i] == y_true[i] for i in multi) / len(multi), 6) if multi else None},
        "clarify_threshold": router.clarify_threshold,
        "top1_accuracy": round(sum(top_correct) / len(rows), 6),  # argmax of the scores, no threshold
        "low_confidence_clarify": sum(d.reason == "low_confidence" for d in decisions),
        "macro_f1_labels": present,
        "reliability": reliability_bins(conf, top_correct),
    }
    return result


# ---------------------------------------------------------------------------------------------- report
def _markdown(result: dict, title: str) -> str:
    lat = result["latency_ms"]
    mt = result.get("multi_turn") or {}
    lines = [
        f"# {title}", "",
        f"- router: `{result.get('router', '?')}`",
        f"- rows: {result['n']}",
        f"- accuracy: {result['accuracy']:.4f}",
        f"- macro-F1: {result['macro_f1']:.4f} (over labels present in gold or predictions)",
        f"- ECE ({ECE_BINS} bins, top probability vs top label correct): {result['ece']:.4f}",
        f"- latency ms: p50 {lat['p50']:.2f}, p95 {lat['p95']:.2f}, mean {lat['mean']:.2f} "
        f"({result.get('latency_mode', '')})",
        f"- clarify threshold: {result.get('clarify_threshold')}",
    ]
    if mt.get("n"):
        lines.append(f"- multi-turn rows: {mt['n']}, accuracy {mt['accuracy']:.4f}")
    lines += ["", "| label | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for lab, m in result["per_label"].items():
        lines.append(f"| {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines += ["", "![confusion matrix](confusion.png)", "", "![reliability diagram](reliability.png)", ""]
    return "\n".join(lines)


def _plot_confusion(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result["confusion"]["labels"]
    mat = np.asarray(result["confusion"]["matrix"], dtype=float)
    row_sum = mat.sum(axis=1, keepdims=True)
    norm = np.divide(mat, row_sum, out=np.zeros_like(mat), where=row_sum > 0)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"confusion ({result.get('router', '')}, n={result['n']}, acc={result['accuracy']:.3f})")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if mat[i, j]:
                ax.text(j, i, int(mat[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of gold row")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_reliability(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = result.get("reliability") or []
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = 1 / max(1, len(bins))
    ax.bar(centers, [b["accuracy"] if b["n"] else 0 for b in bins], width=width * 0.9, alpha=0.7,
           edgecolor="black", label="accuracy in bin")
    pts = [(b["confidence"], b["accuracy"]) for b in bins if b["n"]]
    if pts:
        ax.plot(*zip(*pts, strict=True), "o-", color="tab:red", label="mean confidence vs accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability ({result.get('router', '')}), ECE={result['ece']:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict, out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write report.json, report.md, confusion.png and reliability.png into out_dir; return their paths."""
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise ShopRouterError(f"report path {d} exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    paths = {"json": d / "report.json", "markdown": d / "report.md",
             "confusion": d / "confusion.png", "reliability": d / "reliability.png"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(_markdown(result, title or f"Evaluation: {result.get('router', 'router')}"),
                                 encoding="utf-8")
    _plot_confusion(result, paths["confusion"])
    _plot_reliability(result, paths["reliability"])
    return paths


# ---------------------------------------------------------------------------------------------- compare
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def compare(routers: Sequence[str], datasets: dict[str, Sequence[Row]], router_kwargs: dict[str, dict] | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, latency_sample: int = DEFAULT_LATENCY_SAMPLE,
            print_table: bool = True, console=None) -> dict:
    """Evaluate each router on each dataset: accuracy, macro-F1, p50 latency, memory (RSS increase on load).

    A router that fails to load (e.g. `lora` without its adapter) is a row marked unavailable with the reason.
    Memory is the process RSS increase while building the router, so it includes libraries imported for the
    first time (routers are loaded in the order given, each released before the next).
    """
    from .router import get_router

    router_kwargs = router_kwargs or {}
    table_rows: list[dict] = []
    for name in routers:
        gc.collect()
        before = _rss_mb()
        t0 = time.perf_counter()
        try:
            router = get_router(name, **router_kwargs.get(name, {}))
        except Exception as exc:  # report any load failure as an unavailable row
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            for ds in datasets:
                table_rows.append({"router": name, "dataset": ds, "available": False, "reason": reason})
            continue
        load_s = time.perf_counter() - t0
        mem = max(0.0, _rss_mb() - before)
        for ds, rows in datasets.items():
            res = evaluate(router, rows, batch_size=batch_size, latency_sample=latency_sample)
            table_rows.append({"router": name, "dataset": ds, "available": True, "n": res["n"],
                               "accuracy": res["accuracy"], "macro_f1": res["macro_f1"],
                               "top1_accuracy": res["top1_accuracy"],
                               "p50_ms": res["latency_ms"]["p50"], "memory_mb": round(mem, 1),
                               "load_s": round(load_s, 2), "ece": res["ece"],
                               "multi_turn_accuracy": res["multi_turn"]["accuracy"]})
        del router
    out = {"rows": table_rows, "datasets": {k: len(v) for k, v in datasets.items()},
           "latency_mode": f"p50 of single-message calls on {latency_sample} evenly spaced rows",
           "memory_mode": "process RSS increase while loading the router (MB)"}
    if print_table:
        print_compare(out, console)
    return out


def print_compare(result: dict, console=None) -> None:
    """Print a compare() result as a rich table."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 120))
    table = Table(title="router comparison (accuracy: with the clarify threshold; top-1: argmax of the scores)")
    for col, just in (("router", "left"), ("dataset", "left"), ("n", "right"), ("accuracy", "right"),
                      ("top-1 acc", "right"), ("macro-F1", "right"), ("p50 ms", "right"), ("memory MB", "right"), ("ECE", "right"),
                      ("load s", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    reasons: dict[str, str] = {}
    for r in result["rows"]:
        if not r["available"]:
            reasons.setdefault(r["router"], r["reason"])
            table.add_row(escape(r["router"]), escape(r["dataset"]), "-", "[yellow]unavailable[/]", "-", "-", "-",
                          "-", "-", "-")
            continue
        table.add_row(escape(r["router"]), escape(r["dataset"]), str(r["n"]), f"{r['accuracy']:.4f}",
                      f"{r['top1_accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['p50_ms']:.2f}", f"{r['memory_mb']:.1f}", f"{r['ece']:.3f}",
                      f"{r['load_s']:.1f}")
    console.print(table)
    for name, reason in reasons.items():
        console.print(f"[yellow]{escape(name)} unavailable:[/] {escape(reason)}", highlight=False)
