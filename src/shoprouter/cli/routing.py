"""`shoprouter route` and `shoprouter eval`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..errors import InputError, ShopRouterError
from ..router import DEFAULT_CLARIFY_THRESHOLD, ROUTER_NAMES
from . import app

MAX_STDIN_BYTES = 1 << 20  # reading more than this from stdin is pointless: the text limit is far lower


# ---------------------------------------------------------------------------------------------- helpers
def check_router_name(name: str) -> str:
    if name not in ROUTER_NAMES:
        raise InputError(f"unknown router {name!r}; choose one of: {', '.join(ROUTER_NAMES)}")
    return name


def check_threshold(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"--threshold must be between 0 and 1, got {value}")
    return value


def _coerce(value: str):
    """KEY=VALUE values: ints, floats, true/false/none, else the string."""
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_options(options: list[str] | None) -> dict:
    """Turn repeated `--opt KEY=VALUE` into keyword arguments for the router constructor."""
    out: dict = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise InputError(f"--opt needs KEY=VALUE, got {item!r}")
        out[key] = _coerce(value)
    return out


def router_kwargs(name: str, adapter: Path | None, options: list[str] | None) -> dict:
    """Constructor options for one router: `--opt` for any router, `--adapter` for lora only."""
    kwargs = parse_options(options)
    if adapter is not None and name == "lora":
        kwargs["adapter"] = str(adapter)
    return kwargs


def load_router(name: str, threshold: float = DEFAULT_CLARIFY_THRESHOLD, **kwargs):
    """get_router with user-facing errors: a missing optional module or bad option becomes ShopRouterError."""
    from ..router import get_router

    check_router_name(name)
    try:
        router = get_router(name, **kwargs)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("shoprouter"):
            raise ShopRouterError(f"router {name!r} is not available in this installation ({exc})") from None
        raise
    except TypeError as exc:
        if kwargs and "argument" in str(exc):
            raise InputError(f"router {name!r} does not accept these options: {exc}") from None
        raise
    router.clarify_threshold = check_threshold(threshold)
    return router


def read_text_arg(text: str) -> str:
    """The TEXT argument, or stdin when it is `-`; checked for valid UTF-8 (it is validated for length later)."""
    if text == "-":
        raw = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("text on stdin is not valid UTF-8") from None
        if len(raw) > MAX_STDIN_BYTES:
            raise InputError(f"text is too long (more than {MAX_STDIN_BYTES} bytes on stdin)")
        text = text.rstrip("\r\n")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("text is not valid UTF-8") from None
    return text


def read_history_file(path: Path, labels: list[str]):
    """Earlier turns from a JSONL file (one `{"text": ..., "label": ...}` or string per line, oldest first)
    or a JSON file holding one list of such turns."""
    from ..rows import parse_history, read_utf8

    content = read_utf8(path, "history file")
    stripped = content.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            raw = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: invalid JSON ({exc.msg})") from None
        return parse_history(raw, labels, f"{path}")
    raw = []
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
    return parse_history(raw, labels, f"{path}")


def router_labels(router: str, adapter: str | Path | None, options: dict | None = None) -> list[str]:
    """The labels that rows and history may carry: the adapter's agents for `lora` (read from its router.json,
    before the model loads); for a baseline, those of its `agents` option (a registry YAML), else the seven."""
    from ..agents import default_registry, load_registry

    if router == "lora":
        from ..lora import adapter_registry

        return adapter_registry(adapter).labels
    agents = (options or {}).get("agents")
    return load_registry(agents).labels if agents is not None else default_registry().labels


def _compared_labels(per_router: dict[str, dict]) -> list[str]:
    """The labels shared by every compared router (each with its own options); routers that route to different
    agents cannot be scored on the same rows, so that is a one-line error naming what to pass."""
    by_router = {name: router_labels(name, options.get("adapter"), options) for name, options in per_router.items()}
    first, labels = next(iter(by_router.items()))
    for name, other in by_router.items():
        if set(other) != set(labels):
            raise InputError(f"the compared routers route to different agents ({first}: {', '.join(labels)}; "
                             f"{name}: {', '.join(other)}); give each the same agents, e.g. "
                             f"--opt {name}.agents=F.yaml (tfidf and embedding also --opt {name}.train_path=F)")
    return labels


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------- route
@app.command()
def route(
    text: str = typer.Argument(..., help="The customer's message ('-' reads it from stdin)."),
    history_file: Path | None = typer.Option(None, "--history-file", help="Earlier turns: JSONL of {text, label}."),
    router: str = typer.Option("lora", "--router", "-r", help=f"Router: {', '.join(ROUTER_NAMES)}."),
    threshold: float = typer.Option(DEFAULT_CLARIFY_THRESHOLD, "--threshold",
                                    help="Below this probability an agent decision becomes clarify."),
    as_json: bool = typer.Option(False, "--json", help="Print the contract JSON object."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter directory (lora router only)."),
    opt: list[str] | None = typer.Option(None, "--opt", help="Router option KEY=VALUE (repeatable), "
                                         "e.g. model_path=tfidf.joblib, train_path=train.jsonl."),
) -> None:
    """Route one message to an agent, clarify or none."""
    text = read_text_arg(text)
    from ..rows import validate_text

    validate_text(text)
    check_router_name(router)
    check_threshold(threshold)
    labels = router_labels(router, adapter, parse_options(opt))
    history = read_history_file(history_file, labels) if history_file is not None else []
    r = load_router(router, threshold, **router_kwargs(router, adapter, opt))
    decision = r.route(text, history)
    out = decision.to_dict()
    out.pop("reason", None)
    if as_json:
        _emit_json(out)
        return
    target = f"{decision.decision} ({decision.function})" if decision.function else decision.decision
    note = " [low confidence]" if decision.reason == "low_confidence" else ""
    print(f"{target}  confidence {decision.confidence:.3f}{note}  ({out['latency_ms']} ms, router {r.name})")


# ---------------------------------------------------------------------------------------------- eval
def _dataset_names(paths: list[Path]) -> list[str]:
    names = []
    for p in paths:
        name = p.stem if p.stem not in names else str(p)
        names.append(name)
    return names


def _print_eval(result: dict, name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    lat = result["latency_ms"]
    mt = result["multi_turn"]
    console.print(f"[bold]{name}[/] router [cyan]{result['router']}[/]: n={result['n']}  "
                  f"accuracy [bold]{result['accuracy']:.4f}[/]  macro-F1 {result['macro_f1']:.4f}  "
                  f"ECE {result['ece']:.4f}  p50 {lat['p50']:.2f} ms  p95 {lat['p95']:.2f} ms"
                  + (f"  multi-turn {mt['accuracy']:.4f} (n={mt['n']})" if mt["n"] else ""), highlight=False)
    table = Table(show_edge=False)
    for col in ("label", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for lab, m in result["per_label"].items():
        table.add_row(lab, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(table)


@app.command("eval")
def eval_cmd(
    data: list[Path] = typer.Option(..., "--data", "-d", help="JSONL rows to evaluate on (repeatable)."),
    router: str = typer.Option("lora", "--router", "-r", help=f"Router: {', '.join(ROUTER_NAMES)}."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    report: Path | None = typer.Option(None, "--report", help="Write report.json/.md and plots here."),
    do_compare: bool = typer.Option(False, "--compare", help="Compare every router on the data file(s)."),
    routers: str | None = typer.Option(None, "--routers", help="With --compare: comma-separated routers "
                                       "(default: all)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Rows per route_batch call."),
    latency_sample: int = typer.Option(50, "--latency-sample", min=0,
                                       help="Rows timed with single-message calls for latency."),
    threshold: float = typer.Option(DEFAULT_CLARIFY_THRESHOLD, "--threshold",
                                    help="Below this probability an agent decision becomes clarify."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter directory (lora router only)."),
    opt: list[str] | None = typer.Option(None, "--opt", help="Router option KEY=VALUE (repeatable); with "
                                         "--compare prefix it with the router, e.g. tfidf.model_path=F."),
) -> None:
    """Evaluate a router on labelled rows (accuracy, macro-F1, per label, confusion, latency, ECE)."""
    from .. import evaluate as ev
    from ..rows import read_rows

    check_threshold(threshold)
    if do_compare:
        chosen = [s.strip() for s in routers.split(",") if s.strip()] if routers else list(ROUTER_NAMES)
        if not chosen:
            raise InputError("--routers is empty")
        for name in chosen:
            check_router_name(name)
    else:
        chosen = [check_router_name(router)]
    if do_compare:
        per_router: dict[str, dict] = {name: {"clarify_threshold": threshold} for name in chosen}
        for item in opt or []:
            prefix, dot, rest = item.partition(".")
            if not dot or prefix not in per_router:
                raise InputError(f"with --compare, --opt must be ROUTER.KEY=VALUE for a compared router, got {item!r}")
            per_router[prefix].update(parse_options([rest]))
        if adapter is not None and "lora" in per_router:
            per_router["lora"]["adapter"] = str(adapter)
        labels = _compared_labels(per_router)
    else:
        labels = router_labels(chosen[0], adapter, parse_options(opt))
    names = _dataset_names(data)
    datasets = {n: read_rows(p, labels) for n, p in zip(names, data, strict=True)}

    if do_compare:
        result = ev.compare(chosen, datasets, per_router, batch_size=batch_size, latency_sample=latency_sample,
                            print_table=not as_json)
        if as_json:
            _emit_json(result)
        if report is not None:
            report.mkdir(parents=True, exist_ok=True)
            (report / "compare.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return

    check_router_name(router)
    r = load_router(router, threshold, **router_kwargs(router, adapter, opt))
    results = {}
    for name, rows in datasets.items():
        results[name] = ev.evaluate(r, rows, batch_size=batch_size, latency_sample=latency_sample,
                                    progress=not as_json and sys.stderr.isatty())
        if report is not None:
            out = report if len(datasets) == 1 else report / name
            ev.write_report(results[name], out, title=f"{r.name} on {name}")
    if as_json:
        _emit_json(next(iter(results.values())) if len(results) == 1 else results)
        return
    for name, res in results.items():
        _print_eval(res, name)
    if report is not None:
        print(f"report written to {report}")
