"""The feature registry: every feature's name, family, description, kind and the
plain-language reason texts (English and Russian) that officers read.

A feature is a function returning a `pl.Expr`, named after its column (the
Hamilton style): it is evaluated over the frame its family prepared. The model,
the explanations and the web pages take names and texts from this one place.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import polars as pl

FEATURE_SET_MAJOR = 1


class Family(StrEnum):
    SHIPMENT = "shipment_route"
    GOODS = "goods"
    TRADER = "trader_history"
    WATCHLIST = "watchlist"
    TRAVELLER = "traveller_linkage"
    NETWORK = "network"
    EXTRA = "extra"  # columns brought by a customs administration's own export


class Kind(StrEnum):
    NUMERIC = "numeric"
    FLAG = "flag"  # 0/1
    CATEGORICAL = "categorical"  # integer codes with a stable mapping


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    family: Family
    kind: Kind
    description: str
    # Reason texts shown when the feature pushes the score up. Placeholders:
    # {value} (the feature's value, formatted by `fmt`) and any context column.
    reason_en: str
    reason_ru: str
    fn: Callable[[], pl.Expr]
    fmt: str = "{:.0f}"
    # Categorical features: the stable category list (code = index + 1, 0 = other/missing).
    categories: tuple[str, ...] = ()
    # +1 where more of it can only mean more risk (the model is constrained so).
    monotone: int = 0
    module: str = ""  # the family module that defines it
    # Reason texts for a missing value, where missing has a meaning an officer
    # should read ("never seen before"); otherwise the value shows as "?".
    missing_en: str = ""
    missing_ru: str = ""

    def expr(self) -> pl.Expr:
        return self.fn().alias(self.name)

    def code_expr(self, source: pl.Expr) -> pl.Expr:
        """Integer codes of a categorical column: stable, 0 for unknown or missing."""
        mapping = {c: i + 1 for i, c in enumerate(self.categories)}
        return source.replace_strict(mapping, default=0, return_dtype=pl.Int32)


REGISTRY: dict[str, FeatureSpec] = {}


def feature(
    family: Family,
    description: str,
    reason_en: str,
    reason_ru: str,
    *,
    kind: Kind = Kind.NUMERIC,
    fmt: str = "{:.0f}",
    categories: tuple[str, ...] = (),
    monotone: int = 0,
    missing_en: str = "",
    missing_ru: str = "",
) -> Callable[[Callable[[], pl.Expr]], Callable[[], pl.Expr]]:
    """Register a feature; the decorated function's name is the column's name."""

    def register(fn: Callable[[], pl.Expr]) -> Callable[[], pl.Expr]:
        name = fn.__name__
        if name in REGISTRY:
            raise ValueError(f"feature {name!r} is registered twice")
        REGISTRY[name] = FeatureSpec(
            name,
            family,
            kind,
            description,
            reason_en,
            reason_ru,
            fn,
            fmt,
            categories,
            monotone,
            fn.__module__,
            missing_en,
            missing_ru,
        )
        return fn

    return register


# The family modules `features.build` wires, in order. A module imported for any
# other reason (a test, say) registers its features, but only these are built.
FAMILY_MODULES = (
    "features.shipment",
    "features.goods",
    "features.trader",
    "features.watchlist",
    "features.travellers",
    "features.network",
)


def specs(family: Family | None = None) -> list[FeatureSpec]:
    _load_families()
    return [
        s
        for s in REGISTRY.values()
        if s.module in FAMILY_MODULES and (family is None or s.family is family)
    ]


def feature_names() -> list[str]:
    return [s.name for s in specs()]


def feature_set_version() -> str:
    """Changes whenever a feature is added, removed, or its kind or categories change."""
    digest = hashlib.sha256()
    for spec in specs():
        digest.update(
            f"{spec.name}|{spec.kind}|{spec.monotone}|{','.join(spec.categories)};".encode()
        )
    return f"fs{FEATURE_SET_MAJOR}-{digest.hexdigest()[:10]}"


def render_reason(name: str, value: Any, context: Mapping[str, Any], lang: str = "en") -> str:
    """The reason text of one feature for one shipment."""
    spec = REGISTRY.get(name)
    if spec is None:  # a column an administration's own export brought (extra_*)
        label = name.removeprefix("extra_")
        shown = "?" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        if lang == "ru":
            return f"Поле декларации {label}: {shown}"
        return f"Declared {label}: {shown}"
    template = spec.reason_ru if lang == "ru" else spec.reason_en
    if _missing(value) and spec.missing_en:
        template = spec.missing_ru if lang == "ru" else spec.missing_en
    shown = _format_value(spec, value)
    values = {k: _context_value(v) for k, v in context.items()}
    values["value"] = shown
    try:
        return template.format_map(_Default(values))
    except (ValueError, TypeError):
        return template


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _context_value(value: Any) -> Any:
    """A context column as officers read it: large amounts whole, small ones to three
    significant digits ("about 12,758 USD", not "12758.3748")."""
    if _missing(value):
        return "?"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return value


def _format_value(spec: FeatureSpec, value: Any) -> str:
    if _missing(value):
        return "?"
    if spec.kind is Kind.CATEGORICAL and isinstance(value, int | float):
        code = int(value)
        return spec.categories[code - 1] if 0 < code <= len(spec.categories) else "other"
    try:
        return spec.fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


class _Default(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _load_families() -> None:
    """Import the family modules, which register their features."""
    import importlib

    for module in FAMILY_MODULES:
        importlib.import_module(module)
