"""`shoprouter serve` (the HTTP service) and `shoprouter chat` (a conversation in the terminal)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from ..errors import InputError
from ..router import DEFAULT_CLARIFY_THRESHOLD, ROUTER_NAMES, Router
from . import app

ROUTER_HELP = f"Router: {', '.join(ROUTER_NAMES)}, or package.module:attr (a Router, its class or a factory)."
STORE_HELP = ("Conversation store: sqlite:///FILE (default: $SHOPROUTER_HOME or ~/.local/share/shoprouter/"
              "conversations.sqlite3) or redis://HOST:PORT/DB (shared by replicas).")


def _parse_opts(options: list[str] | None) -> dict:
    out: dict = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise InputError(f"--opt needs KEY=VALUE, got {item!r}")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
            continue
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def build_router(spec: str, threshold: float, adapter: Path | None, options: list[str] | None) -> Router:
    """A router from a name (the same loading as `shoprouter route`) or a module:attr spec."""
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be between 0 and 1, got {threshold}")
    kwargs = _parse_opts(options)
    if ":" not in spec:
        try:
            from .routing import load_router as load_named
            from .routing import router_kwargs
        except ImportError:  # pragma: no cover - routing commands not installed
            load_named = router_kwargs = None
        if load_named is not None:
            return load_named(spec, threshold, **router_kwargs(spec, adapter, options))
        if adapter is not None and spec == "lora":
            kwargs["adapter"] = str(adapter)
    from ..service import load_router

    router = load_router(spec, **kwargs)
    router.clarify_threshold = threshold
    return router


def _agents(shop_db: Path | None):
    from ..shop import ShopAgents, ShopDB

    return ShopAgents(ShopDB(shop_db))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    router: str = typer.Option("lora", "--router", "-r", help=ROUTER_HELP),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    shop_db: Path | None = typer.Option(None, "--shop-db", help="The shop database, created and seeded on first use "
                                        "(default: $SHOPROUTER_HOME or ~/.local/share/shoprouter/shop.sqlite3)."),
    threshold: float = typer.Option(DEFAULT_CLARIFY_THRESHOLD, "--threshold",
                                    help="Below this probability an agent decision becomes clarify."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter directory (lora router only)."),
    opt: list[str] | None = typer.Option(None, "--opt", help="Router option KEY=VALUE (repeatable)."),
    inference_concurrency: int = typer.Option(1, "--inference-concurrency", min=1,
                                              help="Router calls allowed to run at once."),
    max_body_bytes: int = typer.Option(64 * 1024, "--max-body-bytes", min=1024, help="Larger requests get 413."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level (debug, info, warning, error)."),
) -> None:
    """Run the HTTP service (uvicorn): routing, conversations with the shop agents, /healthz, /metrics, /docs."""
    import uvicorn

    from ..service import create_app
    from ..session import open_store

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    r = build_router(router, threshold, adapter, opt)
    st = open_store(store)
    application = create_app(r, st, _agents(shop_db), max_body_bytes=max_body_bytes,
                             inference_concurrency=inference_concurrency, router_name=router)
    print(f"shoprouter: router {router}, store {st.url}, listening on http://{host}:{port} (docs at /docs)",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(application, host=host, port=port, log_level=log_level.lower(), access_log=False)
    finally:
        st.close()


@app.command()
def chat(
    router: str = typer.Option("lora", "--router", "-r", help=ROUTER_HELP),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    shop_db: Path | None = typer.Option(None, "--shop-db", help="The shop database."),
    customer_id: int | None = typer.Option(None, "--customer-id", min=1, help="Talk as this signed-in customer."),
    conversation: str | None = typer.Option(None, "--conversation", help="Continue this conversation id."),
    threshold: float = typer.Option(DEFAULT_CLARIFY_THRESHOLD, "--threshold",
                                    help="Below this probability an agent decision becomes clarify."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter directory (lora router only)."),
    opt: list[str] | None = typer.Option(None, "--opt", help="Router option KEY=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print every turn as one JSON line."),
) -> None:
    """Talk to the shop in the terminal: each message is routed, the agent answers, the turn is stored.

    Commands: /new (new conversation), /show (the conversation so far), /quit (or Ctrl-D).
    """
    from rich.console import Console
    from rich.markup import escape

    from ..conversation import ConversationManager
    from ..errors import ShopRouterError
    from ..session import open_store

    console = Console(highlight=False, soft_wrap=True)
    interactive = sys.stdin.isatty()
    r = build_router(router, threshold, adapter, opt)
    st = open_store(store)
    manager = ConversationManager(r, st, _agents(shop_db))
    conv = manager.get(conversation) if conversation else manager.start(customer_id=customer_id)
    if not as_json:
        console.print(f"[dim]conversation {conv.id} · router {router} · store {st.url}"
                      + (f" · customer {conv.customer_id}" if conv.customer_id else "")
                      + " · /new /show /quit[/]")
    try:
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ") if interactive else input()
            except EOFError:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit", "/q"):
                break
            if text == "/new":
                conv = manager.start(customer_id=customer_id)
                if not as_json:
                    console.print(f"[dim]new conversation {conv.id}[/]")
                continue
            if text == "/show":
                full = manager.get(conv.id).to_dict(include_state=False)
                console.print_json(json.dumps(full, ensure_ascii=False))
                continue
            try:
                result = manager.send(conv.id, line)
            except ShopRouterError as exc:
                if as_json:
                    sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
                else:
                    console.print(f"[red]error:[/] {escape(str(exc))}")
                continue
            t = result.turn
            reply = t.reply or {}
            if as_json:
                sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                sys.stdout.flush()
                continue
            colour = {"clarify": "yellow", "none": "red"}.get(t.decision, "green")
            note = "" if t.reason in ("model",) else f" · {t.reason}"
            tag = escape(f"[{t.decision} {t.confidence:.2f}{note}]")
            who = f"{reply.get('agent')}/" if reply.get("agent") else ""
            console.print(f"[{colour}]{tag}[/] [dim]{escape(who + reply.get('action', ''))}[/]")
            console.print(f"[bold]shop>[/] {escape(reply.get('text', ''))}")
            if result.handoff is not None:
                console.print(f"[magenta]handed to a human ({result.handoff.reason}); hand-off {result.handoff.id}[/]")
    finally:
        st.close()
