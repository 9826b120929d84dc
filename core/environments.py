"""Environment names: the one synonym table, and the risk tier a name implies by default."""

from __future__ import annotations

from typing import Literal

RiskTier = Literal["low", "medium", "high"]

# canonical name -> what people (and older tools) also call it
SYNONYMS: dict[str, tuple[str, ...]] = {
    "prod": ("production", "prd", "live", "生产", "生产环境", "线上", "正式"),
    "staging": ("stage", "stg", "preprod", "pre-prod", "预发", "预发布", "预生产"),
    "test": ("testing", "qa", "测试", "测试环境"),
    "dev": ("development", "develop", "开发", "开发环境"),
}
CANONICAL: dict[str, str] = {
    alias: name for name, aliases in SYNONYMS.items() for alias in (name, *aliases)
}
DEFAULT_TIERS: dict[str, RiskTier] = {"prod": "high", "staging": "medium"}


def canonical(name: str) -> str:
    """The canonical name of an environment (`production` -> `prod`), else the name itself."""
    key = name.strip().lower()
    return CANONICAL.get(key, key)


def same_environment(a: str, b: str) -> bool:
    """Whether two environment names mean the same environment."""
    return canonical(a) == canonical(b)


def default_tier(name: str) -> RiskTier:
    """The risk tier an environment's name implies when its declaration gives none."""
    return DEFAULT_TIERS.get(canonical(name), "low")
