"""Agent registry: the agents a router can send a message to (default seven), YAML-loadable."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .errors import ShopRouterError

CLARIFY = "clarify"
NONE = "none"
NON_AGENT = (CLARIFY, NONE)
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
MIN_AGENTS, MAX_AGENTS = 2, 20


@dataclass(frozen=True)
class Agent:
    """One specialised agent: key (label), function name, description, keywords."""

    key: str
    description: str
    keywords: tuple[str, ...] = field(default_factory=tuple)

    @property
    def function(self) -> str:
        return f"route_to_{self.key}_agent"


DEFAULT_AGENTS: tuple[Agent, ...] = (
    Agent("order", "Track, change or cancel a placed order; delivery date and address.",
          ("order", "track", "tracking", "parcel", "package", "delivery", "shipped", "shipping", "cancel", "arrive", "courier")),
    Agent("search", "Find products: stock, recommendations, price, brand, size.",
          ("find", "looking for", "search", "stock", "available", "recommend", "cheapest", "under", "do you have", "sell")),
    Agent("details", "Product specs, materials, compatibility, reviews, comparisons, warranty.",
          ("spec", "specs", "dimensions", "size of", "material", "compatible", "works with", "reviews", "compare", "warranty", "waterproof")),
    Agent("returns", "Returns, refunds and refund status, exchanges, damaged or wrong items.",
          ("return", "refund", "exchange", "damaged", "broken", "wrong item", "send back", "money back")),
    Agent("account", "Profile, e-mail, phone, addresses, password, 2FA, marketing e-mails, delete account.",
          ("account", "password", "profile", "email", "phone number", "2fa", "two-factor", "username", "newsletter", "delete my account")),
    Agent("payment", "Declined cards, double charges, payment methods, invoices, promo codes, gift cards.",
          ("payment", "card", "charged", "charge", "declined", "invoice", "billing", "promo", "coupon", "gift card", "paypal")),
    Agent("technical", "App crashes, site errors, pages not loading, login errors, broken buttons.",
          ("app", "crash", "error", "bug", "not loading", "website", "page", "button", "glitch", "freezes")),
)


@dataclass(frozen=True)
class Registry:
    """An ordered, validated set of agents."""

    agents: tuple[Agent, ...]

    def __post_init__(self) -> None:
        validate_agents(self.agents)

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.agents]

    @property
    def labels(self) -> list[str]:
        """Every decision a router can make: agent keys, then clarify and none."""
        return self.keys + list(NON_AGENT)

    def get(self, key: str) -> Agent:
        for agent in self.agents:
            if agent.key == key:
                return agent
        raise ShopRouterError(f"unknown agent {key!r}; known: {', '.join(self.keys)}")

    def function_of(self, label: str) -> str | None:
        """The function name for an agent label, None for clarify / none."""
        return None if label in NON_AGENT else self.get(label).function

    def to_dict(self) -> dict:
        return {"agents": [{**asdict(a), "keywords": list(a.keywords)} for a in self.agents]}


def validate_agents(agents: tuple[Agent, ...]) -> None:
    """Raise ShopRouterError when keys are invalid, duplicated, reserved, or the count is out of range."""
    if not MIN_AGENTS <= len(agents) <= MAX_AGENTS:
        raise ShopRouterError(f"a registry needs {MIN_AGENTS}-{MAX_AGENTS} agents, got {len(agents)}")
    seen: set[str] = set()
    for agent in agents:
        if not isinstance(agent.key, str) or not _KEY_RE.match(agent.key):
            raise ShopRouterError(
                f"agent key {agent.key!r} is not a valid identifier (lowercase letters, digits, _; starts with a letter)")
        if agent.key in NON_AGENT:
            raise ShopRouterError(f"agent key {agent.key!r} is reserved for a non-agent decision")
        if agent.key in seen:
            raise ShopRouterError(f"duplicate agent key {agent.key!r}")
        if not str(agent.description).strip():
            raise ShopRouterError(f"agent {agent.key!r} needs a description")
        seen.add(agent.key)


def default_registry() -> Registry:
    """The seven default agents."""
    return Registry(DEFAULT_AGENTS)


def load_registry(path: str | Path) -> Registry:
    """Load a registry from YAML: `agents: [{key, description, keywords: [...]}, ...]`."""
    p = Path(path)
    if not p.is_file():
        raise ShopRouterError(f"registry file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ShopRouterError(f"registry file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("agents"), list):
        raise ShopRouterError(f"registry file {p} must contain a list under 'agents'")
    agents = []
    for i, item in enumerate(raw["agents"]):
        if not isinstance(item, dict) or "key" not in item or "description" not in item:
            raise ShopRouterError(f"registry file {p}: agent #{i + 1} needs 'key' and 'description'")
        kws = item.get("keywords") or []
        if not isinstance(kws, list):
            raise ShopRouterError(f"registry file {p}: keywords of {item['key']!r} must be a list")
        agents.append(Agent(str(item["key"]), str(item["description"]), tuple(str(k) for k in kws)))
    return Registry(tuple(agents))


def save_registry(registry: Registry, path: str | Path) -> None:
    """Write a registry as YAML."""
    Path(path).write_text(yaml.safe_dump(registry.to_dict(), sort_keys=False), encoding="utf-8")
