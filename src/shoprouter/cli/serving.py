"""`shoprouter serve` (the HTTP service and the support-desk console), `shoprouter chat` (a conversation in the
terminal) and `shoprouter keys` (API keys for both)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from ..errors import InputError
from ..router import DEFAULT_CLARIFY_THRESHOLD, ROUTER_NAMES, Router
from . import app
from .routing import parse_options

ROUTER_HELP = f"Router: {', '.join(ROUTER_NAMES)}, or package.module:attr (a Router, its class or a factory)."
STORE_HELP = ("Conversation store: sqlite:///FILE (default: $SHOPROUTER_HOME or ~/.local/share/shoprouter/"
              "conversations.sqlite3) or redis://HOST:PORT/DB (shared by replicas).")


def build_router(spec: str, threshold: float, adapter: Path | None, options: list[str] | None) -> Router:
    """A router from a name (the same loading as `shoprouter route`) or a module:attr spec."""
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be between 0 and 1, got {threshold}")
    kwargs = parse_options(options)
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


def _agents(shop_db: Path | None, router: Router):
    """The embedded shop's agents; says on stderr which of the router's agents the shop has no agent for (a
    router trained on your own agents: routing answers with them, a conversation turn routed to one of them
    gets the shop's 'unsupported' reply)."""
    from ..shop import ShopAgents, ShopDB

    agents = ShopAgents(ShopDB(shop_db))
    missing = [k for k in router.registry.keys if k not in agents.keys]
    if missing:
        print(f"shoprouter: the embedded shop has no agent for {', '.join(missing)}: routing answers with them, "
              "conversation turns routed to them get an 'unsupported' reply", file=sys.stderr, flush=True)
    return agents


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
    keys_file: Path | None = typer.Option(None, "--keys-file", help="API keys file (NAME SCOPES sha256:HEX a line; "
                                          "default $SHOPROUTER_KEYS_FILE, else keys.txt in $SHOPROUTER_HOME)."),
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth", help="No authentication at all (local "
                                          "development only: anyone who reaches the port reads every conversation)."),
    public_routing: bool = typer.Option(False, "--public-routing", help="Let POST /v1/route and /v1/route/batch "
                                        "answer without a key (they store nothing)."),
    retention_days: float | None = typer.Option(None, "--retention-days", envvar="SHOPROUTER_RETENTION_DAYS",
                                                help="Erase conversations inactive for longer than this (checked at "
                                                     "start-up and hourly)."),
    cookie_secure: bool = typer.Option(False, "--cookie-secure", help="Mark the console's session cookie Secure "
                                       "(behind a TLS-terminating proxy)."),
) -> None:
    """Run the HTTP service (uvicorn): the support-desk console at /, routing, conversations with the shop agents,
    /healthz, /metrics, /docs. Every endpoint that reads conversations needs an API key (docs/CONSOLE.md);
    with no key configured, a key for this run is made and printed once."""
    import uvicorn

    from ..auth import AuthConfig
    from ..service import create_app
    from ..session import open_store

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if insecure_no_auth:
        auth = AuthConfig.disabled()
    else:
        auth = AuthConfig.from_env(keys_file, generate=True, public_routing=public_routing or None)
        auth.cookie_secure = cookie_secure
    if retention_days is not None and retention_days <= 0:
        raise InputError("--retention-days must be a positive number of days")
    r = build_router(router, threshold, adapter, opt)
    st = open_store(store)
    application = create_app(r, st, _agents(shop_db, r), max_body_bytes=max_body_bytes,
                             inference_concurrency=inference_concurrency, router_name=router, auth=auth,
                             retention_days=retention_days)
    print(f"shoprouter: router {router}, store {st.url}, listening on http://{host}:{port} (console at /, docs at "
          f"/docs)", file=sys.stderr, flush=True)
    if not auth.enabled:
        print("shoprouter: WARNING authentication is OFF (--insecure-no-auth): anyone who can reach "
              f"{host}:{port} can read and erase every conversation", file=sys.stderr, flush=True)
    elif auth.generated_key:
        print("shoprouter: no API key is configured, so this run made one (it stops working when the server "
              f"stops; `shoprouter keys create NAME` makes a lasting one):\n  {auth.generated_key}",
              file=sys.stderr, flush=True)
    else:
        print(f"shoprouter: {len(auth.credentials)} API key(s) from {', '.join(auth.sources)}"
              + ("; routing is public" if auth.public_routing else ""), file=sys.stderr, flush=True)
    if retention_days is not None:
        print(f"shoprouter: conversations inactive for more than {retention_days:g} days are erased",
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
    manager = ConversationManager(r, st, _agents(shop_db, r))
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


# ------------------------------------------------------------------------------------------------ API keys
keys_app = typer.Typer(no_args_is_help=True, help="API keys for the service and the console (stored hashed).")
app.add_typer(keys_app, name="keys")
KEYS_FILE_HELP = "The keys file (default $SHOPROUTER_KEYS_FILE, else keys.txt in $SHOPROUTER_HOME or ~/.local/share/shoprouter)."


def _keys_file(path: Path | None) -> Path:
    import os

    from ..auth import default_keys_file

    if path is not None:
        return path
    env = os.environ.get("SHOPROUTER_KEYS_FILE")
    return Path(env) if env else default_keys_file()


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="Who or what uses the key (shown in the console and on replies)."),
    scopes: str = typer.Option("console,route", "--scopes", help="console (read conversations, the queue, "
                               "corrections, overview), route (routing and customer messages), or both."),
    keys_file: Path | None = typer.Option(None, "--keys-file", help=KEYS_FILE_HELP),
) -> None:
    """Make a new API key: its hash goes into the keys file, the key is printed once (store it now)."""
    from ..auth import add_key_to_file, parse_scopes

    path = _keys_file(keys_file)
    key = add_key_to_file(path, name, parse_scopes(scopes, "--scopes"))
    print(key)
    print(f"key {name!r} ({scopes}) added to {path}; restart `shoprouter serve` to use it", file=sys.stderr)


@keys_app.command("list")
def keys_list(keys_file: Path | None = typer.Option(None, "--keys-file", help=KEYS_FILE_HELP)) -> None:
    """The keys in the keys file (names, scopes and hash prefixes; the keys themselves are not stored)."""
    from ..auth import read_keys_file

    path = _keys_file(keys_file)
    if not path.is_file():
        raise InputError(f"no keys file at {path}")
    for c in read_keys_file(path):
        print(f"{c.name}\t{'+'.join(sorted(c.scopes))}\t{c.key_hash[:19]}…")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(...),
                keys_file: Path | None = typer.Option(None, "--keys-file", help=KEYS_FILE_HELP)) -> None:
    """Remove a key from the keys file (takes effect when the server restarts)."""
    from ..auth import read_keys_file

    path = _keys_file(keys_file)
    if not path.is_file():
        raise InputError(f"no keys file at {path}")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not any(c.name == name for c in read_keys_file(path)):
        raise InputError(f"{path} has no key named {name!r}")
    kept = [ln for ln in lines if ln.split("#", 1)[0].split()[:1] != [name]]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    print(f"key {name!r} removed from {path}; restart `shoprouter serve`", file=sys.stderr)


@keys_app.command("hash")
def keys_hash() -> None:
    """Read a key on stdin and print its hash (sha256:HEX), e.g. for SHOPROUTER_API_KEYS without the key."""
    from ..auth import stored_hash

    key = sys.stdin.readline().strip()
    print(stored_hash(key, "the key"))
