"""Family 1: the shipment and its route."""

from __future__ import annotations

import polars as pl

from data_contracts.reference import COUNTRIES
from data_contracts.schemas import MODES
from features.context import Params
from features.registry import Family, Kind, Wording, feature

F = Family.SHIPMENT
COUNTRY_CATEGORIES = tuple(sorted(COUNTRIES))


# At most this many shipments are prepared row by row in Python: the same values,
# without the fixed cost of frame operations (an online call holds one shipment).
SMALL = 32


def prepare(ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> pl.DataFrame:
    """Intermediate columns of this family, one row per shipment (same order)."""
    if ships.height <= SMALL:
        return _prepare_few(ships, items, params)
    fx = pl.col("invoice_currency").replace_strict(
        params.usd_per_unit, default=None, return_dtype=pl.Float64
    )
    lines = items.group_by("shipment_id").agg(pl.len().alias("__lines"))
    transit = pl.col("transit_countries").fill_null(pl.lit([], dtype=pl.List(pl.String)))
    usual = sorted(params.common_transit)
    risky = sorted(params.high_risk_countries)
    return ships.join(lines, on="shipment_id", how="left", maintain_order="left").select(
        "shipment_id",
        (pl.col("invoice_amount") * fx).alias("value_usd"),
        transit.list.len().alias("__transit_n"),
        transit.list.eval(~pl.element().is_in(usual)).list.sum().alias("__off_route"),
        transit.list.eval(pl.element().is_in(risky)).list.any().alias("__risky_transit"),
        (pl.col("origin_country").is_in(risky) | pl.col("dispatch_country").is_in(risky)).alias(
            "__risky_origin"
        ),
        pl.col("__lines").fill_null(0),
    )


_SCHEMA = {
    "shipment_id": pl.String,
    "value_usd": pl.Float64,
    "__transit_n": pl.UInt32,
    "__off_route": pl.UInt32,
    "__risky_transit": pl.Boolean,
    "__risky_origin": pl.Boolean,
    "__lines": pl.UInt32,
}


def _in(value: str | None, group: frozenset[str]) -> bool | None:
    """`is_in` of one value: null stays null."""
    return None if value is None else value in group


def _or(a: bool | None, b: bool | None) -> bool | None:
    """Kleene `or`, as Polars' `|` of booleans."""
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _prepare_few(ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> pl.DataFrame:
    """`prepare` row by row (nulls as the frame expressions treat them: a null
    transit country counts neither as off the route nor as risky)."""
    lines: dict[str, int] = {}
    for sid in items.get_column("shipment_id").to_list():
        lines[sid] = lines.get(sid, 0) + 1
    usual, risky, fx = params.common_transit, params.high_risk_countries, params.usd_per_unit
    rows = []
    for sid, amount, currency, transit, origin, dispatch in zip(
        *(
            ships.get_column(c).to_list()
            for c in (
                "shipment_id",
                "invoice_amount",
                "invoice_currency",
                "transit_countries",
                "origin_country",
                "dispatch_country",
            )
        ),
        strict=True,
    ):
        rate = fx.get(currency) if currency is not None else None
        crossed = [c for c in (transit or []) if c is not None]
        rows.append(
            (
                sid,
                None if amount is None or rate is None else amount * rate,
                len(transit or []),
                sum(c not in usual for c in crossed),
                any(c in risky for c in crossed),
                _or(_in(origin, risky), _in(dispatch, risky)),
                lines.get(sid, 0),
            )
        )
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


@feature(
    F,
    "Mode of transport at the border",
    "Mode of transport: {value}",
    "Вид транспорта: {value}",
    kind=Kind.CATEGORICAL,
    categories=MODES,
    value_labels=(
        ("road", "road", "автомобильный"),
        ("rail", "rail", "железнодорожный"),
        ("air", "air", "воздушный"),
        ("sea", "sea", "морской"),
        ("post", "post", "почта"),
        ("express", "express courier", "экспресс-доставка"),
        ("other", "other", "другой"),
    ),
)
def mode() -> pl.Expr:
    return pl.col("mode").cast(pl.String)


@feature(
    F,
    "Country of origin of the goods",
    "Goods originate in {value}",
    "Страна происхождения товара: {value}",
    kind=Kind.CATEGORICAL,
    categories=COUNTRY_CATEGORIES,
)
def origin_country_code() -> pl.Expr:
    return pl.col("origin_country")


@feature(
    F,
    "Country of dispatch",
    "Dispatched from {value}",
    "Отправлено из {value}",
    kind=Kind.CATEGORICAL,
    categories=COUNTRY_CATEGORIES,
)
def dispatch_country_code() -> pl.Expr:
    return pl.col("dispatch_country")


@feature(
    F,
    "Number of transit countries",
    "Route crosses {value} transit {value|country|countries}",
    "Маршрут проходит через {value} {value|страну|страны|стран} транзита",
)
def transit_count() -> pl.Expr:
    return pl.col("__transit_n")


@feature(
    F,
    "Transit countries outside the usual corridors into Central Asia",
    "Route crosses {value} {value|country|countries} off the usual trade corridors",
    "Маршрут проходит через {value} {value|страну|страны|стран} вне обычных торговых коридоров",
)
def transit_off_route() -> pl.Expr:
    return pl.col("__off_route")


@feature(
    F,
    "Origin or dispatch country on the analysts' high-risk list",
    "Origin or dispatch country {origin_country} is on the high-risk list",
    "Страна происхождения или отправления {origin_country} в списке высокого риска",
    kind=Kind.FLAG,
    wordings=(
        Wording(
            lambda v, _c: v == 0,
            "Origin and dispatch countries are not on the high-risk list",
            "Страны происхождения и отправления не в списке высокого риска",
        ),
    ),
)
def high_risk_origin() -> pl.Expr:
    return pl.col("__risky_origin").cast(pl.Int8)


@feature(
    F,
    "A transit country is on the analysts' high-risk list",
    "Route crosses a high-risk country",
    "Маршрут проходит через страну высокого риска",
    kind=Kind.FLAG,
    wordings=(
        Wording(
            lambda v, _c: v == 0,
            "Route crosses no high-risk country",
            "Маршрут не проходит через страны высокого риска",
        ),
    ),
)
def high_risk_transit() -> pl.Expr:
    return pl.col("__risky_transit").cast(pl.Int8)


@feature(
    F,
    "Hours between declaration and expected arrival",
    "Declared only {value} hours before arrival",
    "Задекларировано всего за {value} ч до прибытия",
    wordings=(
        Wording(
            lambda v, _c: v is not None and v < 0,
            "Declared {abs_value} hours after the expected arrival",
            "Задекларировано через {abs_value} ч после ожидаемого прибытия",
        ),
        Wording(
            lambda v, _c: v is not None and v >= 48,
            "Declared {value} hours before arrival",
            "Задекларировано за {value} ч до прибытия",
        ),
    ),
)
def lead_time_hours() -> pl.Expr:
    return (pl.col("expected_arrival_at") - pl.col("declared_at")).dt.total_microseconds() / 3.6e9


@feature(
    F,
    "Number of goods lines",
    "{value} goods {value|line|lines} in one declaration",
    "{value} {value|товарная позиция|товарные позиции|товарных позиций} в одной декларации",
)
def item_count() -> pl.Expr:
    return pl.col("__lines")


@feature(
    F,
    "Gross mass, log10 kg",
    "Gross mass {gross_mass_kg} kg",
    "Масса брутто {gross_mass_kg} кг",
    fmt="{:.2f}",
)
def log_gross_mass() -> pl.Expr:
    return pl.col("gross_mass_kg").log10()


@feature(
    F,
    "Declared value in USD, log10",
    "Declared value about {value_usd} USD",
    "Заявленная стоимость около {value_usd} USD",
    fmt="{:.2f}",
)
def log_value_usd() -> pl.Expr:
    return pl.col("value_usd").log10()


@feature(
    F,
    "Declared value per kg gross, USD, log10",
    # The value itself, not a judgement: the context has nothing to compare it with
    # (the comparison with the usual value per kg of the goods and origin is
    # min_unit_value_z's), and the text is read also where the feature lowers the
    # risk (review s24: "unusual" for every shipment).
    "Declared value about {shown} USD per kg gross",
    "Заявленная стоимость около {shown} USD за кг брутто",
    fmt="{:.2f}",
    shown=lambda v: 10.0**v,
    missing_en="Declared value per kg gross not known (no value in USD)",
    missing_ru="Заявленная стоимость за кг брутто неизвестна (нет стоимости в USD)",
)
def log_value_per_kg() -> pl.Expr:
    return (pl.col("value_usd") / pl.col("gross_mass_kg")).log10()


@feature(F, "Gross kg per package", "{value} kg per package", "{value} кг на место")
def mass_per_package() -> pl.Expr:
    return pl.col("gross_mass_kg") / pl.col("package_count")
