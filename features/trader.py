"""Family 3: what was known about the consignee, consignor and declarant before
the shipment: since when they trade, how much, what, how often they were
inspected and with what result, and who shares their phone or address."""

from __future__ import annotations

import datetime as dt

import polars as pl

from features.context import History
from features.registry import Family, Kind, feature
from features.timeline import as_of_counts, distinct_before, pair_seen_before

F = Family.TRADER
DAY = dt.timedelta(days=1)
WINDOWS = {"7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY, "365d": 365 * DAY}


def prepare(ships: pl.DataFrame, history: History, undervalued: pl.DataFrame) -> pl.DataFrame:
    """`ships` and `history.shipments` carry `<role>_key` columns; `undervalued`
    maps every history shipment_id to its undervaluation flag."""
    hist = history.shipments.join(undervalued, on="shipment_id", how="left").with_columns(
        pl.col("undervalued").fill_null(False).cast(pl.Int64)
    )
    outcomes = history.outcomes.join(
        history.shipments.select("shipment_id", "consignee_key", "consignor_key", "declarant_key"),
        on="shipment_id",
        how="inner",
    ).with_columns(
        pl.col("finding").cast(pl.Int64).alias("__finding"),
        pl.col("finding_category")
        .cast(pl.String)
        .is_in(["firearms", "parts", "ammunition", "explosives"])
        .cast(pl.Int64)
        .alias("__arms_finding"),
    )
    lines = history.items.join(
        hist.select("shipment_id", "declared_at", "consignee_key"), on="shipment_id"
    ).with_columns(pl.col("hs_code").str.slice(0, 2).alias("__chapter"))
    cols: list[pl.Series] = [ships["shipment_id"]]
    for role in ("consignee", "consignor", "declarant"):
        key = f"{role}_key"
        seen = as_of_counts(
            ships,
            key,
            "declared_at",
            hist,
            key,
            "declared_at",
            windows=WINDOWS,
            sums=["undervalued"],
            prefix=role,
        )
        insp = as_of_counts(
            ships,
            key,
            "declared_at",
            outcomes,
            key,
            "inspected_at",
            sums=["__finding", "__arms_finding"],
            prefix=f"{role}_insp",
        )
        cols += [
            (
                (ships["declared_at"] - seen[f"{role}_first"]).dt.total_microseconds() / 8.64e10
            ).alias(f"__{role}_days"),
            *[seen[f"{role}_n_{w}"].alias(f"__{role}_n_{w}") for w in WINDOWS],
            seen[f"{role}_n"].alias(f"__{role}_n"),
            seen[f"{role}_undervalued"].alias(f"__{role}_underv"),
            insp[f"{role}_insp_n"].alias(f"__{role}_insp"),
            insp[f"{role}_insp___finding"].alias(f"__{role}_find"),
            insp[f"{role}_insp___arms_finding"].alias(f"__{role}_arms_find"),
        ]
    chapters = distinct_before(
        ships,
        "consignee_key",
        "declared_at",
        lines,
        "consignee_key",
        "__chapter",
        "declared_at",
        prefix="c",
    )
    cols.append(chapters["c_distinct"].alias("__consignee_chapters"))
    for contact in ("phone", "address"):
        col = f"consignee_{contact}"
        norm = pl.col(col).str.to_lowercase().str.replace_all(r"[^\w]", "")
        q = ships.with_columns(norm.alias("__contact"))
        h = hist.with_columns(norm.alias("__contact"))
        parties = distinct_before(
            q,
            "__contact",
            "declared_at",
            h,
            "__contact",
            "consignee_key",
            "declared_at",
            prefix="p",
        )["p_distinct"]
        self_seen = pair_seen_before(
            q,
            ("__contact", "consignee_key"),
            "declared_at",
            h,
            ("__contact", "consignee_key"),
            "declared_at",
        )
        cols.append((parties - self_seen.cast(pl.UInt32)).alias(f"__shared_{contact}"))
    return pl.DataFrame(cols)


def _role_features(role: str, ru: str) -> None:
    def days() -> pl.Expr:
        return pl.col(f"__{role}_days")

    def new() -> pl.Expr:
        return (pl.col(f"__{role}_n") == 0).cast(pl.Int8)

    def findings() -> pl.Expr:
        return pl.col(f"__{role}_arms_find")

    def inspections() -> pl.Expr:
        return pl.col(f"__{role}_insp")

    for fn, name, desc, en, ru_text, kind, fmt in (
        (
            days,
            f"{role}_days_since_first",
            f"Days since the {role} was first seen",
            f"{role.title()} first seen {{value}} days ago",
            f"{ru} впервые появился {{value}} дн. назад",
            Kind.NUMERIC,
            "{:.0f}",
        ),
        (
            new,
            f"{role}_is_new",
            f"The {role} was never seen before",
            f"{role.title()} never seen before",
            f"{ru} ранее не встречался",
            Kind.FLAG,
            "{:.0f}",
        ),
        (
            findings,
            f"{role}_arms_findings",
            f"Arms findings known before for the {role}",
            f"{role.title()} had {{value}} arms finding(s) before",
            f"У лица ({ru.lower()}) ранее {{value}} изъят. оружия",
            Kind.NUMERIC,
            "{:.0f}",
        ),
        (
            inspections,
            f"{role}_inspections",
            f"Inspections known before for the {role}",
            f"{role.title()} inspected {{value}} time(s) before",
            f"{ru} ранее досматривался {{value}} раз",
            Kind.NUMERIC,
            "{:.0f}",
        ),
    ):
        fn.__name__ = name
        monotone = 1 if name.endswith("arms_findings") else 0
        feature(F, desc, en, ru_text, kind=kind, fmt=fmt, monotone=monotone)(fn)
    for w in WINDOWS:

        def count(w: str = w) -> pl.Expr:
            return pl.col(f"__{role}_n_{w}")

        count.__name__ = f"{role}_shipments_{w}"
        feature(
            F,
            f"Shipments of the {role} in the {w} before",
            f"{role.title()}: {{value}} shipment(s) in the last {w}",
            f"{ru}: {{value}} отправок за последние {w}",
        )(count)


_role_features("consignee", "Получатель")
_role_features("consignor", "Отправитель")
_role_features("declarant", "Декларант")


@feature(
    F,
    "Distinct HS chapters the consignee imported before",
    "Consignee imported {value} different kinds of goods before (HS chapters)",
    "Получатель ранее ввозил {value} разных групп товаров",
)
def consignee_distinct_chapters() -> pl.Expr:
    return pl.col("__consignee_chapters")


@feature(
    F,
    "Share of the consignee's earlier shipments that were undervalued",
    "{value} of the consignee's earlier shipments were undervalued",
    "{value} прежних отправок получателя были занижены по стоимости",
    fmt="{:.0%}",
)
def consignee_undervalued_share() -> pl.Expr:
    n = pl.col("__consignee_n")
    return pl.when(n > 0).then(pl.col("__consignee_underv") / n)


@feature(
    F,
    "Other consignees seen before with the same phone",
    "{value} other consignee(s) used the same phone",
    "Тот же телефон указывали ещё {value} получател.",
)
def consignee_phone_shared() -> pl.Expr:
    return pl.col("__shared_phone")


@feature(
    F,
    "Other consignees seen before at the same address",
    "{value} other consignee(s) declared the same address",
    "Тот же адрес указывали ещё {value} получател.",
)
def consignee_address_shared() -> pl.Expr:
    return pl.col("__shared_address")
