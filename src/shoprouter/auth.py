"""Authentication for the service and the support-desk console: API keys (stored hashed) and login sessions.

Credentials come from
- `SHOPROUTER_API_KEYS`: comma-separated keys, each a plain key (at least 16 characters) or the hash of one
  written as `sha256:HEX`; optionally `NAME=KEY` or `NAME:SCOPES=KEY` (scopes separated by `+`);
- a keys file (`--keys-file`, `SHOPROUTER_KEYS_FILE`, else `$SHOPROUTER_HOME/keys.txt` or
  `~/.local/share/shoprouter/keys.txt` when it exists): one key a line, `NAME SCOPES sha256:HEX`
  (`shoprouter keys create NAME` writes such a line and prints the key once; the file never holds a key).

Only the SHA-256 of a key is kept in memory. Keys are long random strings, so a fast hash is enough (a
password-style slow hash protects guessable secrets, which these are not).

Scopes:
- `route`: routing (`POST /v1/route`, `/v1/route/batch`) and the customer side of a conversation (start one,
  send a message, fetch the humans' replies) - what a chat front end's back end needs;
- `console`: everything a support agent does: read, list and search conversations, the hand-off queue,
  replies, resolving, corrections and their export, erasing, the overview and `/metrics`.
A key without scopes has both.

The console signs in with a key once (`POST /v1/session`) and then carries an HttpOnly, SameSite=Strict
session cookie, signed with HMAC-SHA256 (`SHOPROUTER_SESSION_SECRET`, or a random secret per process), valid
for 12 hours and only while its key is still configured. Requests authenticated by the cookie that change
something must also carry the header `X-Shoprouter-Console: 1` (a page on another site cannot add it, so a
forged cross-site request is refused).

The check runs in an ASGI middleware before routing: without valid credentials every protected page and
endpoint answers 401 (a page gets the login form with it), with a key that lacks the scope 403, whatever the
path names - so a wrong key never learns whether a conversation exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

ROUTE, CONSOLE = "route", "console"
SCOPES = (ROUTE, CONSOLE)
COOKIE = "shoprouter_session"
CSRF_HEADER = "x-shoprouter-console"
SESSION_TTL_S = 12 * 3600
MIN_KEY_CHARS = 16
KEY_PREFIX = "sr_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASH_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


def hash_key(key: str) -> str:
    """The stored form of a key: `sha256:HEX`."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A new random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Credential:
    name: str
    key_hash: str  # sha256:HEX
    scopes: frozenset[str] = frozenset(SCOPES)


@dataclass(frozen=True)
class Principal:
    """Who made a request, and how."""

    name: str
    scopes: frozenset[str]
    via: str  # key | session | none (authentication disabled)
    key_hash: str = field(default="", repr=False, compare=False)  # the credential it was proven with

    def to_dict(self) -> dict:
        return {"name": self.name, "scopes": sorted(self.scopes), "via": self.via}


def parse_scopes(text: str, where: str) -> frozenset[str]:
    parts = [p for p in re.split(r"[+,]", text.strip()) if p]
    if not parts or parts == ["*"] or parts == ["all"]:
        return frozenset(SCOPES)
    bad = [p for p in parts if p not in SCOPES]
    if bad:
        raise InputError(f"{where}: unknown scope {bad[0]!r} (scopes: {', '.join(SCOPES)})")
    return frozenset(parts)


def stored_hash(secret: str, where: str) -> str:
    secret = secret.strip()
    if secret.startswith("sha256:"):
        if not _HASH_RE.match(secret):
            raise InputError(f"{where}: a hashed key is sha256: followed by 64 lowercase hex digits")
        return secret
    if len(secret) < MIN_KEY_CHARS:
        raise InputError(f"{where}: an API key needs at least {MIN_KEY_CHARS} characters "
                         "(create one with `shoprouter keys create NAME`)")
    return hash_key(secret)


def parse_env_keys(value: str) -> list[Credential]:
    """`SHOPROUTER_API_KEYS`: comma-separated `KEY`, `sha256:HEX`, `NAME=KEY` or `NAME:SCOPES=KEY`."""
    out = []
    for i, item in enumerate(p.strip() for p in value.split(",")):
        if not item:
            continue
        where = f"SHOPROUTER_API_KEYS entry {i + 1}"
        name, scopes = f"env-{i + 1}", frozenset(SCOPES)
        head, sep, secret = item.partition("=")
        if sep and not head.startswith("sha256:") and _NAME_RE.match(head.split(":", 1)[0]):
            label, _, sc = head.partition(":")
            name = label
            if sc:
                scopes = parse_scopes(sc, where)
        else:
            secret = item
        out.append(Credential(name, stored_hash(secret, where), scopes))
    return out


def read_keys_file(path: Path) -> list[Credential]:
    """A keys file: `NAME SCOPES sha256:HEX` a line (`#` comments); plain keys are refused."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the keys file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"keys file {path} is not UTF-8") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}:{n}"
        if len(parts) != 3 or not _NAME_RE.match(parts[0]) or not _HASH_RE.match(parts[2]):
            raise InputError(f"{where}: expected `NAME SCOPES sha256:HEX` (the file holds hashes, never keys)")
        out.append(Credential(parts[0], parts[2], parse_scopes(parts[1], where)))
    return out


def default_keys_file() -> Path:
    home = os.environ.get("SHOPROUTER_HOME")
    if home:
        return Path(home) / "keys.txt"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shoprouter" / "keys.txt"


def add_key_to_file(path: Path, name: str, scopes: frozenset[str] | None = None) -> str:
    """Create a key, append its hash to the keys file (mode 600), return the key (shown once)."""
    if not _NAME_RE.match(name):
        raise InputError("a key name is 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    existing = read_keys_file(path) if path.exists() else []
    if any(c.name == name for c in existing):
        raise InputError(f"{path} already has a key named {name!r}")
    key = new_key()
    sc = "+".join(s for s in SCOPES if s in (scopes or frozenset(SCOPES)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        if not existing and fh.tell() == 0:
            fh.write("# shoprouter API keys: NAME SCOPES sha256:HEX (the keys themselves are never stored)\n")
        fh.write(f"{name} {sc} {hash_key(key)}\n")
    return key


@dataclass
class AuthConfig:
    """The credentials a server accepts (or `enabled=False`: everything is open, for local development)."""

    credentials: list[Credential] = field(default_factory=list)
    enabled: bool = True
    public_routing: bool = False  # POST /v1/route and /v1/route/batch without a key
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    cookie_secure: bool = False
    generated_key: str | None = None  # a key made for this process (printed once at start-up)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._by_hash = {c.key_hash: c for c in self.credentials}
        self._revoked: dict[str, float] = {}
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def disabled(cls) -> AuthConfig:
        return cls(enabled=False, sources=["disabled"])

    @classmethod
    def from_env(cls, keys_file: Path | None = None, env: dict | None = None, *, generate: bool = False,
                 public_routing: bool | None = None) -> AuthConfig:
        """Keys from SHOPROUTER_API_KEYS and the keys file; with none configured and `generate`, one new key
        for this process (else no key at all: every protected endpoint answers 401)."""
        env = os.environ if env is None else env
        creds: list[Credential] = []
        sources = []
        if env.get("SHOPROUTER_API_KEYS", "").strip():
            creds += parse_env_keys(env["SHOPROUTER_API_KEYS"])
            sources.append("SHOPROUTER_API_KEYS")
        path = keys_file or (Path(env["SHOPROUTER_KEYS_FILE"]) if env.get("SHOPROUTER_KEYS_FILE") else None)
        if path is not None:
            if not path.is_file():
                raise InputError(f"keys file not found: {path} (create it with `shoprouter keys create NAME "
                                 f"--keys-file {path}`)")
            creds += read_keys_file(path)
            sources.append(str(path))
        elif default_keys_file().is_file():
            creds += read_keys_file(default_keys_file())
            sources.append(str(default_keys_file()))
        secret = env.get("SHOPROUTER_SESSION_SECRET", "")
        generated = None
        if not creds and generate:
            generated = new_key()
            creds.append(Credential("generated", hash_key(generated)))
            sources.append("generated at start-up")
        if public_routing is None:
            public_routing = env.get("SHOPROUTER_PUBLIC_ROUTING", "").lower() in ("1", "true", "yes")
        return cls(creds, True, public_routing,
                   hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32),
                   generated_key=generated, sources=sources)

    # ---------------------------------------------------------------------------------------- checking
    def check_key(self, key: str | None) -> Principal | None:
        if not key:
            return None
        cred = self._by_hash.get(hash_key(key))
        return None if cred is None else Principal(cred.name, cred.scopes, "key", cred.key_hash)

    def make_session(self, principal: Principal) -> str:
        cred = self._by_hash[principal.key_hash]
        payload = {"n": cred.name, "k": cred.key_hash[7:23], "e": int(time.time()) + SESSION_TTL_S,
                   "i": secrets.token_hex(8)}
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        return body + "." + self._sign(body)

    def _sign(self, body: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.session_secret, body.encode(), hashlib.sha256).digest()
                                        ).decode().rstrip("=")

    def check_session(self, token: str | None) -> Principal | None:
        if not token or "." not in token or len(token) > 1024:
            return None
        body, _, sig = token.rpartition(".")
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or payload.get("e", 0) < time.time():
            return None
        with self._lock:
            if payload.get("i") in self._revoked:
                return None
        cred = next((c for c in self.credentials if c.name == payload.get("n")
                     and c.key_hash[7:23] == payload.get("k")), None)
        return None if cred is None else Principal(cred.name, cred.scopes, "session", cred.key_hash)

    def revoke_session(self, token: str | None) -> None:
        """Log out: this process refuses the session from now on (it also expires on its own)."""
        if not token or "." not in token:
            return
        body = token.rpartition(".")[0]
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeDecodeError):
            return
        now = time.time()
        with self._lock:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            if isinstance(payload, dict) and payload.get("i"):
                self._revoked[str(payload["i"])] = float(payload.get("e", now + SESSION_TTL_S))

    def login_allowed(self, client: str, window_s: float = 300, max_failures: int = 20) -> bool:
        """False after `max_failures` failed logins from one address within `window_s` seconds."""
        now = time.time()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if t > now - window_s]
            self._failures[client] = recent
            return len(recent) < max_failures

    def login_failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(time.time())
            if len(self._failures) > 10_000:
                self._failures.clear()


# ------------------------------------------------------------------------------------------- the middleware
OPEN_PATHS = {"/healthz", "/login", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico"}
ROUTING_PATHS = {"/v1/route", "/v1/route/batch"}
_MESSAGES_RE = re.compile(r"^/v1/conversations/[^/]+/messages$")
_REPLIES_RE = re.compile(r"^/v1/conversations/[^/]+/replies$")


def required_scope(method: str, path: str, public_routing: bool) -> str | None:
    """The scope a request needs (None: open)."""
    if path in OPEN_PATHS or path.startswith("/static/"):
        return None
    if path == "/v1/session" and method in ("POST", "DELETE"):
        return None  # log in / log out
    if path in ROUTING_PATHS:
        return None if public_routing and method == "POST" else ROUTE
    if method == "POST" and (path == "/v1/conversations" or _MESSAGES_RE.match(path)):
        return ROUTE
    if method == "GET" and _REPLIES_RE.match(path):
        return ROUTE  # the chat front end fetches the humans' replies for the customer
    return CONSOLE


def bearer(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None


def cookie(headers: dict[bytes, bytes], name: str = COOKIE) -> str | None:
    raw = headers.get(b"cookie", b"").decode("latin-1")
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


class AuthMiddleware:
    """Pure ASGI: authenticates every request before routing (see the module doc) and puts the Principal
    in `scope["state"]["principal"]`."""

    def __init__(self, app, auth: AuthConfig, login_page: bytes = b""):
        self.app, self.auth, self.login_page = app, auth, login_page

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        headers = dict(scope.get("headers") or [])
        need = required_scope(method, path, self.auth.public_routing)
        principal = None
        if not self.auth.enabled:
            principal = Principal("anonymous", frozenset(SCOPES), "none")
        else:
            principal = self.auth.check_key(bearer(headers))
            if principal is None:
                principal = self.auth.check_session(cookie(headers))
        scope.setdefault("state", {})["principal"] = principal
        if need is not None:
            if principal is None:
                page = method == "GET" and path == "/" and self.login_page
                return await _deny(send, 401, "unauthorized", "authentication required: send an API key as "
                                   "'Authorization: Bearer KEY' or sign in to the console", html=page or None)
            if principal.via == "session" and method not in ("GET", "HEAD", "OPTIONS") \
                    and headers.get(CSRF_HEADER.encode()) != b"1":
                return await _deny(send, 403, "csrf", f"a console request that changes something needs the "
                                   f"{CSRF_HEADER}: 1 header")
            if need not in principal.scopes:
                return await _deny(send, 403, "forbidden", f"this key does not have the {need!r} scope")
        return await self.app(scope, receive, send)


async def _deny(send, status: int, code: str, detail: str, html: bytes | None = None) -> None:
    if html:
        body, ctype = html, b"text/html; charset=utf-8"
    else:
        body, ctype = json.dumps({"error": code, "detail": detail}).encode(), b"application/json"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="shoprouter"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
