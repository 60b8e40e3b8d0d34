"""The embedded shop: a seeded SQLite database (db) and the seven agents that act on it (agents)."""

from .agents import AgentReply, ShopAgents
from .db import ShopDB, default_shop_path

__all__ = ["AgentReply", "ShopAgents", "ShopDB", "default_shop_path"]
