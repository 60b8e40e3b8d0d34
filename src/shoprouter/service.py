"""The HTTP service (FastAPI): routing, conversations with the shop agents, health and Prometheus metrics.

`create_app(router, store)` builds an app around one router (loaded once per process) and one conversation
store; `shoprouter serve` runs it with uvicorn. Handlers are plain functions, so FastAPI runs them in its
threadpool and routing never blocks the event loop; a semaphore bounds how many inferences run at once.

Endpoints (OpenAPI docs at /docs and /openapi.json):
  POST /v1/route                          route one message (with optional history)
  POST /v1/route/batch                    route up to 256 messages
  POST /v1/conversations                  start a conversation (optional customer_id, metadata)
  POST /v1/conversations/{id}/messages    route + run the agent + store the turn (Idempotency-Key aware)
  GET  /v1/conversations/{id}             the conversation with its turns and hand-offs
  GET  /v1/handoffs                       hand-offs (?status=open&order=oldest: the human queue)
  GET  /healthz                           liveness + store check (503 when the store is down)
  GET  /metrics                           Prometheus metrics (a registry per app, no global state)

The support-desk console (docs/CONSOLE.md) is served at `/` from the package's static/ directory, with:
  GET    /v1/conversations                        list and search (?q=, ?status=, ?limit=, ?offset=)
  DELETE /v1/conversations/{id}                   erase a conversation, its hand-offs and corrections
  POST   /v1/conversations/{id}/replies           a human's reply to the customer (stored as a turn)
  GET    /v1/conversations/{id}/replies?after=N   the humans' replies (route scope: for the chat front end)
  POST   /v1/conversations/{id}/resolve           close the hand-off
  PUT    /v1/conversations/{id}/turns/{seq}/label correct a turn's routing label
  GET    /v1/corrections, /v1/corrections/export  the corrections, and as training rows (JSONL)
  GET    /v1/overview                             decision mix, rates and latency over time
  POST/GET/DELETE /v1/session                     console sign-in with an API key (cookie), who, sign-out
Authentication (auth.py): every endpoint but /healthz, the docs, the login page and static assets needs
an API key or a console session; routing endpoints need the `route` scope, the rest `console`.

Every error is JSON `{"error": CODE, "detail": MESSAGE}` with a 4xx status for bad input: text empty or
longer than rows.MAX_TEXT_CHARS, model control tokens in the text, wrong types, invalid JSON or UTF-8,
bodies over `max_body_bytes` (413), unknown conversations (404), write conflicts (409).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import re
import threading
import time
from importlib.resources import files
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .auth import COOKIE, CSRF_HEADER, SESSION_TTL_S, AuthConfig, AuthMiddleware, Principal, cookie
from .conversation import ConversationManager, MessageResult
from .errors import InputError, ShopRouterError
from .router import Router, get_router
from .rows import MAX_TEXT_CHARS, Turn
from .session import STATUSES, ConflictError, ConversationStore, NotFoundError, iso_days_ago
from .shop.agents import ShopAgents
from .timeline import Timeline

log = logging.getLogger("shoprouter.service")

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 256
MAX_HISTORY = 50
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# Gemma / FunctionGemma control tokens: a customer never types these; they are a prompt-injection attempt.
CONTROL_TOKEN_RE = re.compile(
    r"<\s*/?\s*(?:start_of_turn|end_of_turn|bos|eos|pad|unk|mask|escape|start_function_\w+|end_function_\w+|"
    r"start_of_image|end_of_image|image_soft_token)\s*>", re.I)
CONTROL_CHAR_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# --------------------------------------------------------------------------------------------- validation
def check_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    m = CONTROL_TOKEN_RE.search(value)
    if m:
        raise ValueError(f"text contains the reserved control token {m.group(0)!r}")
    if CONTROL_CHAR_RE.search(value):
        raise ValueError("text contains control characters")
    return value


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, strict=True,
                            description=f"The customer's message (1-{MAX_TEXT_CHARS} characters)."),
                 AfterValidator(check_text)]
Id = Annotated[str, Field(pattern=ID_PATTERN, strict=True)]


def check_metadata(value: dict) -> dict:
    try:
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        raise ValueError("metadata must be JSON with valid Unicode") from None
    if len(raw) > 4096:
        raise ValueError("metadata is larger than 4096 bytes")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryTurn(Strict):
    text: Text
    label: str | None = Field(None, description="The decision made for that turn (an agent key, clarify, none).")


class RouteRequest(Strict):
    text: Text
    history: list[HistoryTurn] = Field(default_factory=list, max_length=MAX_HISTORY,
                                       description="Earlier user turns, oldest first.")


class BatchRequest(Strict):
    items: list[RouteRequest] = Field(min_length=1, max_length=MAX_BATCH)


class DecisionOut(BaseModel):
    decision: str
    agent: str | None
    function: str | None
    confidence: float
    scores: dict[str, float]
    reason: str
    latency_ms: float | None


class BatchOut(BaseModel):
    results: list[DecisionOut]
    latency_ms: float


class ConversationCreate(Strict):
    customer_id: int | None = Field(None, ge=1, le=2**31, strict=True,
                                    description="The signed-in customer, if any (account and order changes need it).")
    metadata: Annotated[dict[str, Any], AfterValidator(check_metadata)] = Field(default_factory=dict)
    conversation_id: Id | None = Field(None, description="Choose the id yourself (409 if it exists).")


class MessageIn(Strict):
    text: Text
    message_id: Id | None = Field(None, description="Idempotency key: sending the same id again returns the stored "
                                                    "turn instead of a duplicate (also as the Idempotency-Key header).")


class ReplyOut(BaseModel):
    agent: str | None
    action: str
    text: str
    data: dict[str, Any]
    missing: list[str]


class TurnOut(BaseModel):
    seq: int
    message_id: str
    text: str
    decision: str
    agent: str | None
    function: str | None
    confidence: float
    reason: str
    scores: dict[str, float]
    reply: ReplyOut | None
    received_at: str
    created_at: str
    latency_ms: float | None
    meta: dict[str, Any]
    role: str = Field("customer", description="customer (a routed message) or human (a support agent's reply)")
    author: str | None = Field(None, description="The human who wrote a `human` turn.")
    correction: dict[str, Any] | None = Field(None, description="A human's routing label for this turn, if any.")


class HandoffOut(BaseModel):
    id: str
    conversation_id: str
    reason: str
    seq: int | None
    created_at: str
    customer_id: int | None
    transcript: list[dict[str, Any]]
    note: str
    status: str = "open"
    resolved_at: str | None = None
    resolved_by: str | None = None


class MessageOut(BaseModel):
    conversation_id: str
    status: str
    replayed: bool
    turn: TurnOut
    reply: ReplyOut | None
    handoff: HandoffOut | None


class ConversationBase(BaseModel):
    """Fields every view of a conversation has."""

    id: str
    created_at: str
    updated_at: str
    status: str
    customer_id: int | None
    turn_count: int
    meta: dict[str, Any]


class ConversationSummary(ConversationBase):
    last_text: str | None
    last_decision: str | None
    last_role: str | None


class ConversationList(BaseModel):
    items: list[ConversationSummary]
    total: int
    limit: int
    offset: int


class HumanReplyIn(Strict):
    text: Text
    message_id: Id | None = Field(None, description="Idempotency key for the reply.")


class LabelIn(Strict):
    label: str = Field(description="The right decision for the turn: an agent key, clarify or none.")
    note: str = Field("", max_length=500)


class CorrectionOut(BaseModel):
    conversation_id: str
    seq: int
    label: str
    previous: str
    author: str | None
    created_at: str
    note: str


class SessionIn(Strict):
    key: str = Field(min_length=1, max_length=512, description="An API key with the console scope.")


class ConversationOut(ConversationBase):
    turns: list[TurnOut]
    handoffs: list[HandoffOut]


# ------------------------------------------------------------------------------------------------- metrics
class Metrics:
    """Prometheus metrics in a registry of their own (one per app)."""

    def __init__(self, labels: list[str], timeline: Timeline | None = None):
        self.timeline = timeline or Timeline()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("shoprouter_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("shoprouter_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.in_progress = Gauge("shoprouter_http_requests_in_progress", "HTTP requests being served", registry=r)
        self.routing = Histogram("shoprouter_routing_duration_seconds", "Router inference time per message",
                                 registry=r, buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.decisions = Counter("shoprouter_decisions_total", "Routing decisions by label and endpoint",
                                 ["decision", "source"], registry=r)
        self.clarifications = Counter("shoprouter_clarifications_total", "Clarification questions asked", registry=r)
        self.handoffs = Counter("shoprouter_handoffs_total", "Conversations handed to a human, by reason",
                                ["reason"], registry=r)
        self.turns = Counter("shoprouter_turns_total", "Conversation turns stored", registry=r)
        self.conversations = Counter("shoprouter_conversations_total", "Conversations started", registry=r)
        self.human_replies = Counter("shoprouter_human_replies_total", "Replies written by humans in the console",
                                     registry=r)
        self.corrections = Counter("shoprouter_corrections_total", "Routing labels corrected in the console",
                                   registry=r)
        self.deletions = Counter("shoprouter_conversations_deleted_total", "Conversations erased, by why",
                                 ["why"], registry=r)
        self.info = Gauge("shoprouter_info", "Service information", ["version", "router", "store"], registry=r)
        for label in labels:
            for source in ("route", "conversation"):
                self.decisions.labels(label, source)
        for reason in ("out_of_scope", "repeated_clarification", "low_confidence"):
            self.handoffs.labels(reason)

    def decision(self, label: str, source: str, latency_ms: float | None) -> None:
        self.decisions.labels(label, source).inc()
        if latency_ms is not None:
            self.routing.observe(latency_ms / 1000)
        self.timeline.routing(label, latency_ms)


SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY")]
# The console runs only its own files: no inline script, no other origin, no plugins, no framing.
CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class SecurityHeadersMiddleware:
    """Adds nosniff / no-referrer / no-framing to every response and a strict CSP to all but /docs."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        csp = not (path.startswith("/docs") or path.startswith("/redoc"))

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or []) + SECURITY_HEADERS
                if csp:
                    headers.append((b"content-security-policy", CSP))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, wrapped)


class _BodyTooLarge(Exception):
    pass


class LimitsAndMetricsMiddleware:
    """Pure ASGI middleware: rejects bodies over the limit (413) and records request metrics."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app, self.metrics, self.max = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"]
        start = time.perf_counter()
        status = {"code": 500}
        started = {"v": False}
        self.metrics.in_progress.inc()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                started["v"] = True
            await send(message)

        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max):
                await _send_error(send_wrapper, 413 if length.isdigit() else 400,
                                  "body_too_large" if length.isdigit() else "bad_request",
                                  f"the request body is larger than {self.max} bytes" if length.isdigit()
                                  else "invalid Content-Length header")
                return
            seen = {"n": 0}

            async def receive_wrapper():
                message = await receive()
                if message["type"] == "http.request":
                    seen["n"] += len(message.get("body", b""))
                    if seen["n"] > self.max:
                        raise _BodyTooLarge()
                return message

            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except _BodyTooLarge:
                if not started["v"]:
                    await _send_error(send_wrapper, 413, "body_too_large",
                                      f"the request body is larger than {self.max} bytes")
        finally:
            self.metrics.in_progress.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(method, path, str(status["code"])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)


async def _send_error(send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, code: str, detail: str, errors: list | None = None) -> JSONResponse:
    content: dict[str, Any] = {"error": code, "detail": detail}
    if errors:
        content["errors"] = errors
    return JSONResponse(status_code=status, content=content)


def _clean_errors(errors) -> list[dict]:
    out = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append({"field": ".".join(loc) or "body", "message": msg, "type": e.get("type")})
    return out


STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                ".ico": "image/x-icon"}


def load_static() -> dict[str, tuple[bytes, str]]:
    """The console's files, shipped in the package (static/): name -> (bytes, content type)."""
    out: dict[str, tuple[bytes, str]] = {}
    root = files("shoprouter").joinpath("static")
    if not root.is_dir():  # pragma: no cover - a broken installation
        return out
    for item in root.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if item.is_file() and suffix in STATIC_TYPES:
            out[item.name] = (item.read_bytes(), STATIC_TYPES[suffix])
    return out


def _principal(request: Request) -> Principal | None:
    return request.scope.get("state", {}).get("principal")


def _author(request: Request) -> str | None:
    p = _principal(request)
    return None if p is None else p.name


# ------------------------------------------------------------------------------------------------ the app
def create_app(router: Router, store: ConversationStore, agents: ShopAgents | None = None, *,
               max_body_bytes: int = MAX_BODY_BYTES, inference_concurrency: int = 1,
               history_window: int | None = None, router_name: str | None = None,
               auth: AuthConfig | None = None, retention_days: float | None = None,
               retention_interval_s: float = 3600.0, timeline: Timeline | None = None) -> FastAPI:
    """The service around one router and one store (both built once, by the caller).

    `auth`: the accepted credentials (default: from the environment, see auth.py; with none configured every
    protected endpoint answers 401; `AuthConfig.disabled()` opens everything). `retention_days`: erase
    conversations whose last activity is older than this, at start-up and every `retention_interval_s`.
    """
    kw = {} if history_window is None else {"history_window": history_window}
    manager = ConversationManager(router, store, agents, inference_concurrency=inference_concurrency, **kw)
    metrics = Metrics(router.labels, timeline)
    name = router_name or getattr(router, "name", type(router).__name__)
    metrics.info.labels(__version__, name, store.kind).set(1)
    auth = auth if auth is not None else AuthConfig.from_env()
    static = load_static()
    if retention_days is not None and retention_days <= 0:
        raise InputError("the retention must be a positive number of days")

    def purge_once() -> int:
        n = store.purge_older_than(iso_days_ago(retention_days))
        if n:
            metrics.deletions.labels("retention").inc(n)
            log.info("retention: erased %d conversation(s) inactive for more than %s days", n, retention_days)
        return n

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        worker = None
        if retention_days is not None:
            def loop():
                while not stop.wait(retention_interval_s):
                    try:
                        purge_once()
                    except Exception:  # the store may be down for a while: try again next time
                        log.exception("retention purge failed")

            try:
                purge_once()  # before the first request
            except Exception:
                log.exception("retention purge failed")

            worker = threading.Thread(target=loop, name="shoprouter-retention", daemon=True)
            worker.start()
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                worker.join(5)

    app = FastAPI(title="shoprouter", version=__version__, lifespan=lifespan,
                  description="Routes e-commerce support messages to seven shop agents, keeps conversations, "
                              "asks when a message is ambiguous and hands over to a human when it must. "
                              "Send an API key as `Authorization: Bearer KEY` (see docs/CONSOLE.md).")
    app.state.manager = manager
    app.state.metrics = metrics
    app.state.store = store
    app.state.auth = auth
    app.state.purge = purge_once if retention_days is not None else None
    login_page = static.get("login.html", (b"", ""))[0]
    app.add_middleware(AuthMiddleware, auth=auth, login_page=login_page)
    app.add_middleware(LimitsAndMetricsMiddleware, metrics=metrics, max_body_bytes=max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = _clean_errors(exc.errors())
        if any(e["type"] == "json_invalid" for e in errors):
            return _error(400, "invalid_json", "the request body is not valid JSON", errors)
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return _error(422, "invalid_request", f"{first['field']}: {first['message']}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "the request body could not be read as JSON (invalid JSON or UTF-8)"
            code = "invalid_json"
        return _error(exc.status_code, code, detail)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError):
        return _error(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError):
        return _error(409, "conflict", str(exc))

    @app.exception_handler(ShopRouterError)
    async def _bad_input(request: Request, exc: ShopRouterError):
        return _error(422 if isinstance(exc, InputError) else 400, "invalid_input", str(exc))

    async def _unavailable(request: Request, exc: Exception):
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _error(503, "store_unavailable", "the conversation store is unavailable; retry with the same "
                      "message_id (nothing was stored twice)")

    for exc_type in _store_errors():
        app.add_exception_handler(exc_type, _unavailable)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # pragma: no cover - a bug
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal error; see the server log")

    def _decision_out(d) -> dict:
        return d.to_dict()

    # ------------------------------------------------------------------------------------------ routing
    @app.post("/v1/route", response_model=DecisionOut, tags=["routing"],
              summary="Route one message to an agent, `clarify` or `none`")
    def route(req: RouteRequest):
        d = manager.route(req.text, [Turn(h.text, h.label) for h in req.history])
        metrics.decision(d.decision, "route", d.latency_ms)
        return _decision_out(d)

    @app.post("/v1/route/batch", response_model=BatchOut, tags=["routing"], summary="Route many messages at once")
    def route_batch(req: BatchRequest):
        start = time.perf_counter()
        ds = manager.route_batch([i.text for i in req.items], [[Turn(h.text, h.label) for h in i.history]
                                                              for i in req.items])
        for d in ds:
            metrics.decision(d.decision, "route", d.latency_ms)
        return {"results": [_decision_out(d) for d in ds], "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    # ------------------------------------------------------------------------------------ conversations
    @app.post("/v1/conversations", status_code=201, response_model=ConversationOut, tags=["conversations"],
              summary="Start a conversation")
    def create_conversation(req: ConversationCreate | None = None):
        req = req or ConversationCreate()
        conv = manager.start(customer_id=req.customer_id, meta=req.metadata, conversation_id=req.conversation_id)
        metrics.conversations.inc()
        return conv.to_dict(include_state=False)

    @app.get("/v1/conversations", response_model=ConversationList, tags=["console"],
             summary="List and search conversations, most recently active first")
    def list_conversations(q: Annotated[str | None, Query(max_length=200, description="A part of the id, the "
                                                          "customer id, or words of any message.")] = None,
                           status: Annotated[Literal[STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
                           limit: Annotated[int, Query(ge=1, le=500)] = 50,
                           offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0):
        items, total = store.list_conversations(limit, offset, status, q)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.post("/v1/conversations/{conversation_id}/messages", response_model=MessageOut, tags=["conversations"],
              summary="Send a customer message: route it, run the agent, store the turn",
              responses={200: {"description": "The stored turn (`replayed` is true when the message id was "
                                               "already stored)"}, 404: {"description": "Unknown conversation"}})
    def post_message(conversation_id: str, req: MessageIn,
                     idempotency_key: Annotated[str | None, Header(pattern=ID_PATTERN)] = None):
        result: MessageResult = manager.send(conversation_id, req.text, req.message_id or idempotency_key)
        if result.created:
            t = result.turn
            metrics.turns.inc()
            metrics.decision(t.decision, "conversation", (t.meta or {}).get("routing_ms"))
            clarified = t.decision == "clarify" and (t.reply or {}).get("action") == "clarify"
            if clarified:
                metrics.clarifications.inc()
            if result.handoff is not None:
                metrics.handoffs.labels(result.handoff.reason).inc()
            metrics.timeline.turn(t.seq == 1, clarified, result.handoff.reason if result.handoff else None)
        return result.to_dict()

    @app.get("/v1/conversations/{conversation_id}", response_model=ConversationOut, tags=["conversations"],
             summary="A conversation with its turns (and their corrections) and hand-offs")
    def get_conversation(conversation_id: str):
        return manager.get(conversation_id).to_dict(include_state=False)

    @app.delete("/v1/conversations/{conversation_id}", status_code=204, tags=["console"],
                summary="Erase a conversation with its turns, hand-offs and corrections")
    def delete_conversation(conversation_id: str, request: Request):
        if not manager.delete(conversation_id):
            raise NotFoundError(f"conversation {conversation_id} not found")
        metrics.deletions.labels("request").inc()
        log.info("conversation %s erased by %s", conversation_id, _author(request))
        return Response(status_code=204)

    @app.post("/v1/conversations/{conversation_id}/replies", status_code=201, response_model=TurnOut,
              tags=["console"], summary="A human's reply to the customer, stored as a turn (role human)")
    def human_reply(conversation_id: str, req: HumanReplyIn, request: Request):
        turn, created = manager.reply(conversation_id, req.text, _author(request), req.message_id)
        if created:
            metrics.human_replies.inc()
            metrics.timeline.human_reply()
        return turn.to_dict()

    @app.get("/v1/conversations/{conversation_id}/replies", response_model=list[TurnOut], tags=["conversations"],
             summary="The humans' replies to the customer (after turn `after`), for the chat front end")
    def human_replies(conversation_id: str, after: Annotated[int, Query(ge=0)] = 0):
        conv = manager.get(conversation_id)
        return [t.to_dict() for t in conv.turns if t.role == "human" and (t.seq or 0) > after]

    @app.post("/v1/conversations/{conversation_id}/resolve", response_model=list[HandoffOut], tags=["console"],
              summary="Close the conversation's open hand-off (the agents answer its next message again)")
    def resolve(conversation_id: str, request: Request):
        return [h.to_dict() for h in manager.resolve(conversation_id, _author(request))]

    @app.put("/v1/conversations/{conversation_id}/turns/{seq}/label", response_model=CorrectionOut,
             tags=["console"], summary="Correct the routing label of a customer turn (training data)")
    def correct(conversation_id: str, seq: Annotated[int, Path(ge=1, le=10_000_000)], req: LabelIn,
                request: Request):
        c = manager.correct(conversation_id, seq, req.label, _author(request), req.note)
        metrics.corrections.inc()
        metrics.timeline.correction()
        return c.to_dict()

    @app.get("/v1/handoffs", response_model=list[HandoffOut], tags=["conversations"],
             summary="Hand-offs to a human: newest first, or ?status=open&order=oldest for the queue")
    def handoffs(limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 status: Annotated[Literal["open", "resolved"] | None, Query()] = None,
                 order: Annotated[Literal["newest", "oldest"], Query()] = "newest"):
        return [h.to_dict() for h in store.list_handoffs(limit, status=status, oldest_first=order == "oldest")]

    # ------------------------------------------------------------------------------------ feedback loop
    @app.get("/v1/corrections", response_model=list[CorrectionOut], tags=["console"],
             summary="Every correction, oldest first")
    def corrections(limit: Annotated[int, Query(ge=1, le=100_000)] = 1000):
        return [c.to_dict() for c in store.list_corrections(limit)]

    @app.get("/v1/corrections/export", tags=["console"],
             summary="The corrections as training rows (JSONL: text, label, history, group)")
    def export_corrections():
        from .feedback import correction_rows

        rows = correction_rows(store, router.labels, manager.history_window)
        body = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows)
        return Response(body, media_type="application/x-ndjson", headers={
            "content-disposition": 'attachment; filename="corrections.jsonl"', "cache-control": "no-store"})

    # ---------------------------------------------------------------------------------------- overview
    @app.get("/v1/overview", tags=["console"],
             summary="Decision mix, clarification and hand-off rates, routing latency over time (this process)")
    def overview(window: Annotated[int, Query(ge=60, le=7 * 86400, description="Seconds to look back.")] = 3600,
                 points: Annotated[int, Query(ge=1, le=500)] = 60):
        out = metrics.timeline.overview(window, points)
        out.update(router=name, store=store.kind, labels=router.labels, version=__version__)
        return out

    # ------------------------------------------------------------------------------- console sign-in
    @app.post("/v1/session", tags=["console"], summary="Sign in to the console with an API key (sets a cookie)")
    def login(req: SessionIn, request: Request):
        client = request.client.host if request.client else "?"
        if not auth.enabled:
            return {"name": "anonymous", "scopes": ["console", "route"], "via": "none"}
        if not auth.login_allowed(client):
            return _error(429, "too_many_attempts", "too many failed sign-ins; wait a few minutes")
        p = auth.check_key(req.key)
        if p is None:
            auth.login_failed(client)
            return _error(401, "unauthorized", "unknown API key")
        if "console" not in p.scopes:
            return _error(403, "forbidden", "this key has no console scope (it is for routing only)")
        resp = JSONResponse({**Principal(p.name, p.scopes, "session").to_dict()})
        resp.set_cookie(COOKIE, auth.make_session(p), max_age=SESSION_TTL_S, httponly=True, samesite="strict",
                        secure=auth.cookie_secure or request.url.scheme == "https", path="/")
        resp.headers["cache-control"] = "no-store"
        return resp

    @app.get("/v1/session", tags=["console"], summary="Who is signed in")
    def whoami(request: Request):
        p = _principal(request)
        return {**p.to_dict(), "auth": auth.enabled, "csrf_header": CSRF_HEADER}

    @app.delete("/v1/session", tags=["console"], summary="Sign out of the console")
    def logout(request: Request):
        auth.revoke_session(cookie(dict(request.scope.get("headers") or [])))
        resp = Response(status_code=204)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    # --------------------------------------------------------------------------------- console pages
    def _static(name: str, status: int = 200) -> Response:
        item = static.get(name)
        if item is None:
            raise StarletteHTTPException(404, f"{name} not found")
        return Response(item[0], status_code=status, media_type=item[1],
                        headers={"cache-control": "no-cache" if name.endswith(".html") else "max-age=300"})

    @app.get("/", include_in_schema=False)
    def console_page():
        return _static("index.html")

    @app.get("/login", include_in_schema=False)
    def login_page_route():
        return _static("login.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        return _static(name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return _static("favicon.svg") if "favicon.svg" in static else Response(status_code=204)

    # ---------------------------------------------------------------------------------------- operations
    @app.get("/healthz", tags=["operations"], summary="Liveness and store check")
    def healthz():
        ok = store.ping()
        body = {"status": "ok" if ok else "unavailable", "version": __version__, "router": name,
                "labels": router.labels, "store": store.kind, "store_ok": ok}
        if ok:
            body["durable"] = store.durability().get("durable")
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi_with_keys():  # so /docs has an "Authorize" button for the API key
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (docs/CONSOLE.md)."}}
            schema["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi_with_keys
    return app


def _store_errors() -> list[type[Exception]]:
    """Errors that mean the store is down (503, retryable), not that the request was bad."""
    import sqlite3

    out: list[type[Exception]] = [sqlite3.OperationalError]
    try:
        import redis

        out += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError]
    except ImportError:  # pragma: no cover
        pass
    return out


# ------------------------------------------------------------------------------------------------ loading
def load_router(spec: str, **kwargs) -> Router:
    """A router by name (`lora`, `keyword`, `rules`, `tfidf`, `embedding`) or as `package.module:attr`, where
    attr is a Router instance, a Router class or a factory returning one."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            obj = getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"cannot load router {spec!r}: {exc}") from None
        router = obj if isinstance(obj, Router) else obj(**kwargs)
        if not isinstance(router, Router):
            raise InputError(f"{spec!r} did not give a Router")
        return router
    try:
        return get_router(spec, **kwargs)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("shoprouter"):
            raise ShopRouterError(f"router {spec!r} is not available in this installation ({exc})") from None
        raise
