"""The feature registry: every feature's name, family, description, kind and the
plain-language reason texts (English and Russian) that officers read.

A feature is a function returning a `pl.Expr`, named after its column (the
Hamilton style): it is evaluated over the frame its family prepared. The model,
the explanations and the web pages take names and texts from this one place.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import polars as pl

# Raised when features keep their names but change meaning (2: the goods text features
# no longer leave a null for chapter-93 lines or codes without tariff text).
FEATURE_SET_MAJOR = 2


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
class Wording:
    """A reason text used instead of the feature's own when `when(value, context)` is
    true: wording that depends on the value's sign or size ("far above" / "far below"),
    or on why a value is missing. `value` is None when the value is missing."""

    when: Callable[[float | None, Mapping[str, Any]], bool]
    en: str
    ru: str


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    family: Family
    kind: Kind
    description: str
    # Reason texts shown when the feature pushes the score up. Placeholders:
    # {value} (the feature's value, formatted by `fmt`), {abs_value}, {shown} (see
    # `shown`) and any context column; a word that agrees with a number is written
    # {value|отправка|отправки|отправок} (Russian: one, few, many) or
    # {value|match|matches} (English), see `render_reason`.
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
    # Wordings tried in order before the texts above (the first whose `when` holds).
    wordings: tuple[Wording, ...] = ()
    # Categorical features: how a category reads, (category, English, Russian).
    value_labels: tuple[tuple[str, str, str], ...] = ()
    # The value as officers read it, for the placeholder {shown} (a feature kept
    # as a logarithm is read as the amount: `lambda v: 10**v`), written as the
    # context's amounts are ("about 1.08", "12,758").
    shown: Callable[[float], float] | None = None

    def expr(self) -> pl.Expr:
        return self.fn().alias(self.name)

    def code_expr(self, source: pl.Expr) -> pl.Expr:
        """Integer codes of a categorical column: stable, 0 for unknown or missing."""
        if self.categories and len(set(self.categories)) == len(self.categories):
            # The same codes by a cast to an enum of the categories (anything else
            # null, then 0): a third of the replace's cost on the one row of an
            # online call.
            enum = pl.Enum(list(self.categories))
            codes = source.cast(enum, strict=False).to_physical().cast(pl.Int32) + 1
            return codes.fill_null(0)
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
    wordings: tuple[Wording, ...] = (),
    value_labels: tuple[tuple[str, str, str], ...] = (),
    shown: Callable[[float], float] | None = None,
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
            wordings,
            value_labels,
            shown,
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


# The modules' order in `specs` (and so in `feature_set_version` and the model's
# columns): the order in which the command line has always registered them (goods
# imports the network module), which every feature-set version recorded so far hashes.
SPEC_ORDER = (
    "features.shipment",
    "features.goods",
    "features.network",
    "features.trader",
    "features.watchlist",
    "features.travellers",
)


def specs(family: Family | None = None) -> list[FeatureSpec]:
    """The registered features in a fixed order: by family module (`SPEC_ORDER`),
    then as each module registers them. Not the order of registration across
    modules, which follows whichever entry point imported a module first (the
    server and the command line did it differently, and so recorded two versions
    of one feature set)."""
    _load_families()
    rank = {module: i for i, module in enumerate(SPEC_ORDER)}
    return sorted(
        (
            s
            for s in REGISTRY.values()
            if s.module in FAMILY_MODULES and (family is None or s.family is family)
        ),
        key=lambda s: rank[s.module],
    )


def feature_names() -> list[str]:
    return [s.name for s in specs()]


def feature_set_version(extras: Mapping[str, Any] | None = None) -> str:
    """Changes whenever a feature is added, removed, or its kind or categories change.

    `extras`: the columns an administration's own export brought (`extra_*`, as
    feature_set.json records them: {"numeric": [names], "categorical": {name:
    [values]}}). Adding, removing or re-typing one changes the version (a suffix
    `+x<hash>`); a new value of a categorical extra does not: its code is appended
    and the codes of the known values never change (see `extra_codes`)."""
    digest = hashlib.sha256()
    for spec in specs():
        digest.update(
            f"{spec.name}|{spec.kind}|{spec.monotone}|{','.join(spec.categories)};".encode()
        )
    version = f"fs{FEATURE_SET_MAJOR}-{digest.hexdigest()[:10]}"
    kinds = extra_kinds(extras)
    if not kinds:
        return version
    extra = hashlib.sha256(
        ";".join(f"{name}|{kind}" for name, kind in sorted(kinds.items())).encode()
    )
    return f"{version}+x{extra.hexdigest()[:8]}"


def extra_kinds(extras: Mapping[str, Any] | None) -> dict[str, Kind]:
    """`extra_*` name -> its kind (numeric or categorical) of an extras record."""
    if not extras:
        return {}
    kinds = {str(n): Kind.NUMERIC for n in extras.get("numeric") or ()}
    kinds.update({str(n): Kind.CATEGORICAL for n in extras.get("categorical") or {}})
    return kinds


def extra_codes(
    known: Mapping[str, list[str]], values: Mapping[str, list[str]]
) -> dict[str, list[str]]:
    """The code tables of categorical extras (code = position + 1; 0 = missing),
    extended with the values seen now: a value keeps the code it was first given,
    a new value is appended (in sorted order among the new ones), none is
    renumbered, so a model trained earlier reads the same codes."""
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys([*known, *values]):
        table = list(known.get(name, []))
        seen = set(table)
        table += sorted({v for v in values.get(name, []) if v not in seen})
        out[name] = table
    return out


def render_reason(name: str, value: Any, context: Mapping[str, Any], lang: str = "en") -> str:
    """The reason text of one feature for one shipment: the first of its wordings
    that fits the value, else its missing-value text (or a plain "no value" text,
    never a bare "?"), else its reason text. Placeholders: {value}, {abs_value}
    (its size, without the sign), {shown} (the value as an amount, `FeatureSpec.shown`)
    and the context columns; {name|one|few|many} is the word that agrees with the
    number `name` stands for ("{value} {value|отправка|отправки|отправок}" reads
    "1 отправка", "2 отправки", "5 отправок", "11 отправок", "21 отправка";
    English: {value|match|matches}), see `plural`."""
    if name not in REGISTRY:
        _load_families()
    spec = REGISTRY.get(name)
    if spec is None:  # a column an administration's own export brought (extra_*)
        label = name.removeprefix("extra_")
        if _missing(value):
            return (
                f"Поле декларации {label}: нет значения"
                if lang == "ru"
                else (f"Declared {label}: no value")
            )
        shown = _localised(f"{value:g}", lang) if isinstance(value, float) else str(value)
        if lang == "ru":
            return f"Поле декларации {label}: {shown}"
        return f"Declared {label}: {shown}"
    missing = _missing(value)
    number = None if missing or not isinstance(value, int | float) else float(value)
    template = _template(spec, value, number, context, lang)
    template = _with_plurals(template, spec, value, number, context)
    values = {k: _context_value(v, lang) for k, v in context.items()}
    values["value"] = _format_value(spec, value, lang)
    values["abs_value"] = _format_value(spec, abs(number), lang) if number is not None else "?"
    values["shown"] = _shown(spec, number, lang)
    try:
        return template.format_map(_Default(values))
    except (ValueError, TypeError):
        return template


def refresh_reason_texts(
    reasons: list[dict[str, Any]], context: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Stored reasons with their texts rendered again from the feature, value and the
    stored context (the values are those of the score; only the wording is today's)."""
    out = []
    for reason in reasons:
        name = reason.get("feature")
        if not isinstance(name, str):
            out.append(dict(reason))
            continue
        value = reason.get("value")
        out.append(
            {
                **reason,
                "text_en": render_reason(name, value, context, "en"),
                "text_ru": render_reason(name, value, context, "ru"),
            }
        )
    return out


def plural_ru(n: float, one: str, few: str, many: str) -> str:
    """The Russian form of a word after the number `n`: `one` after 1, 21, 101...
    ("1 отправка", "21 отправка"), `few` after 2-4, 22-24... ("2 отправки"),
    `many` after 0, 5-20, 25-30... and 11-14, 111-114... ("5 отправок",
    "11 отправок"). A fraction takes `few` ("2,5 отправки"), as Russian reads a
    fraction ("две целых пять десятых отправки")."""
    if not float(n).is_integer():
        return few
    k = abs(int(n))
    if k % 10 == 1 and k % 100 != 11:
        return one
    if 2 <= k % 10 <= 4 and not 12 <= k % 100 <= 14:
        return few
    return many


def plural(n: float | None, forms: tuple[str, ...] | list[str]) -> str:
    """The form of a word after the number `n`: three forms are Russian's
    (`plural_ru`: one, few, many), two are English's (one, other). No number
    (a value missing): the last form ("— отправок", "? shipments")."""
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return forms[-1]
    if len(forms) == 3:
        return plural_ru(n, *forms)
    return forms[0] if n == 1 else forms[-1]


# A word agreeing with a number in a reason text: {value|отправка|отправки|отправок}
# is the word as it reads after the feature's value ("2 отправки"), in its Russian
# forms (one, few, many: `plural_ru`) or English ones ({value|match|matches}). The
# number is the placeholder named first: value, abs_value or a context column.
_PLURAL = re.compile(r"\{(\w+)((?:\|[^{}|]*){2,3})\}")


def _with_plurals(
    template: str, spec: FeatureSpec, value: Any, number: float | None, context: Mapping[str, Any]
) -> str:
    """`template` with its plural placeholders ({name|one|few|many}) replaced by the
    form that agrees with the number `name` stands for, as the text shows it (a value
    of 5.2 shown "5" reads "5 дней"; the last form when there is no number)."""
    if "|" not in template:
        return template

    def shown(name: str) -> float | None:
        if name == "value":
            text = _format_value(spec, value)
        elif name == "abs_value":
            text = "?" if number is None else _format_value(spec, abs(number))
        elif name == "shown":
            text = _shown(spec, number, "en")
        else:
            text = str(_context_value(context.get(name)))
        try:
            return float(text.replace(",", ""))
        except ValueError:  # not a number ("?", a category, a share "40%")
            return None

    def form(match: re.Match[str]) -> str:
        return plural(shown(match.group(1)), match.group(2)[1:].split("|"))

    return _PLURAL.sub(form, template)


def _template(
    spec: FeatureSpec, value: Any, number: float | None, context: Mapping[str, Any], lang: str
) -> str:
    ru = lang == "ru"
    for wording in spec.wordings:
        if wording.when(None if _missing(value) else number, context):
            return wording.ru if ru else wording.en
    if _missing(value):
        if spec.missing_en:
            return spec.missing_ru if ru else spec.missing_en
        # no text for a missing value: say so rather than print "?" in the sentence
        if ru:  # no Russian description: the reason text with a dash for the value
            text = spec.reason_ru.replace("{value}", "—").replace("{abs_value}", "—")
            return f"Нет данных: {text}"
        return f"No value for: {spec.description[:1].lower()}{spec.description[1:]}"
    return spec.reason_ru if ru else spec.reason_en


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _context_value(value: Any, lang: str = "en") -> Any:
    """A context column as officers read it: large amounts whole, small ones to three
    significant digits ("about 12,758 USD", not "12758.3748"; in Russian
    "12 758", with a decimal comma)."""
    if _missing(value):
        return "?"
    if isinstance(value, float):
        return _localised(_amount(value), lang)
    return value


def _amount(value: float) -> str:
    """An amount the English way: whole from 100 ("12,758"), else to three
    significant digits, never in exponent form ("1.08", "0.0000123")."""
    if abs(value) >= 100 or not math.isfinite(value):
        return f"{value:,.0f}"
    text = f"{value:.3g}"
    if "e" in text:  # (below 0.0001: three significant digits, written out)
        digits = 2 - math.floor(math.log10(abs(value)))
        text = f"{value:.{digits}f}"
    return text


def _shown(spec: FeatureSpec, number: float | None, lang: str) -> str:
    """The placeholder {shown}: `spec.shown` of the value, as an amount."""
    if spec.shown is None or number is None:
        return "?"
    try:
        amount = float(spec.shown(number))
    except (ArithmeticError, ValueError):
        return "?"
    return _localised(_amount(amount), lang) if math.isfinite(amount) else "?"


def _localised(number: str, lang: str) -> str:
    """A number formatted the English way ("104,304.5") as the language writes it:
    Russian groups thousands with a no-break space and marks decimals with a comma
    ("104 304,5"); an English comma would read as a decimal mark there."""
    if lang != "ru":
        return number
    return number.replace(",", "\u00a0").replace(".", ",")


def _format_value(spec: FeatureSpec, value: Any, lang: str = "en") -> str:
    if _missing(value):
        return "?"
    if spec.kind is Kind.CATEGORICAL and isinstance(value, int | float):
        code = int(value)
        category = spec.categories[code - 1] if 0 < code <= len(spec.categories) else "other"
        for name, en, ru in spec.value_labels:
            if name == category:
                return ru if lang == "ru" else en
        return category
    try:
        return _localised(spec.fmt.format(value), lang)
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
