"""Family 3: what was known about the consignee, consignor and declarant before
the shipment: since when they trade, how much, what, how often they were
inspected and with what result, and who shares their phone or address."""

from __future__ import annotations

import datetime as dt

import polars as pl

from features.registry import Family, Kind, feature
from features.timeline import AsOfTable, FirstSeen, as_of_query, distinct_query, pair_seen_query

F = Family.TRADER
DAY = dt.timedelta(days=1)
WINDOWS = {"7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY, "365d": 365 * DAY}


ROLES = ("consignee", "consignor", "declarant")
CONTACT_FIELDS = ("phone", "address")


def shipment_events(ships: pl.DataFrame, undervalued: pl.DataFrame) -> pl.DataFrame:
    """Shipments (with `<role>_key`) and their 0/1 undervaluation flag."""
    return ships.join(undervalued, on="shipment_id", how="left").with_columns(
        pl.col("undervalued").fill_null(False).cast(pl.Int64)
    )


def outcome_events(outcomes: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """Outcomes with the party keys of their shipment (`ships` carries them)."""
    return outcomes.join(
        ships.select("shipment_id", "consignee_key", "consignor_key", "declarant_key"),
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


def line_events(items: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    return items.join(
        ships.select("shipment_id", "declared_at", "consignee_key"), on="shipment_id"
    ).with_columns(pl.col("hs_code").str.slice(0, 2).alias("__chapter"))


def _normalised(contact: str) -> pl.Expr:
    return pl.col(f"consignee_{contact}").str.to_lowercase().str.replace_all(r"[^\w]", "")


def _contact(frame: pl.DataFrame, contact: str) -> pl.DataFrame:
    """consignee_key, declared_at and the consignee's normalised contact `__contact`."""
    return frame.select("consignee_key", "declared_at", _normalised(contact).alias("__contact"))


class Tables:
    """What this family reads of the history, built once (see features.state)."""

    def __init__(
        self,
        seen: dict[str, AsOfTable],
        inspections: dict[str, AsOfTable],
        chapters: FirstSeen,
        contacts: dict[str, FirstSeen],
    ):
        self.seen = seen
        self.inspections = inspections
        self.chapters = chapters
        self.contacts = contacts

    @classmethod
    def build(cls, ships: pl.DataFrame, items: pl.DataFrame, outcomes: pl.DataFrame) -> Tables:
        """`ships`: `shipment_events` of the history; `outcomes`: `outcome_events`."""
        return cls(
            {r: AsOfTable.build(ships, f"{r}_key", "declared_at", ["undervalued"]) for r in ROLES},
            {
                r: AsOfTable.build(
                    outcomes, f"{r}_key", "inspected_at", ["__finding", "__arms_finding"]
                )
                for r in ROLES
            },
            FirstSeen.build(line_events(items, ships), "consignee_key", "__chapter", "declared_at"),
            {
                c: FirstSeen.build(_contact(ships, c), "__contact", "consignee_key", "declared_at")
                for c in CONTACT_FIELDS
            },
        )

    def append(self, ships: pl.DataFrame, items: pl.DataFrame, outcomes: pl.DataFrame) -> None:
        """Add rows recorded after those held (same forms as `build`; `items` of `ships`)."""
        for r in ROLES:
            self.seen[r].append(ships.select(f"{r}_key", "declared_at", "undervalued"))
            self.inspections[r].append(
                outcomes.select(f"{r}_key", "inspected_at", "__finding", "__arms_finding")
            )
        self.chapters.append(line_events(items, ships))
        for c in CONTACT_FIELDS:
            self.contacts[c].append(_contact(ships, c))


def prepare(ships: pl.DataFrame, tables: Tables) -> pl.DataFrame:
    """`ships` carries `<role>_key` columns; `tables` holds the history."""
    cols: list[pl.Series] = [ships["shipment_id"]]
    for role in ROLES:
        key = f"{role}_key"
        seen = as_of_query(
            ships, key, "declared_at", tables.seen[role], windows=WINDOWS, prefix=role
        )
        insp = as_of_query(
            ships, key, "declared_at", tables.inspections[role], prefix=f"{role}_insp"
        )
        cols += [
            seen[f"{role}_first"].alias(f"__{role}_first"),
            *[seen[f"{role}_n_{w}"].alias(f"__{role}_n_{w}") for w in WINDOWS],
            seen[f"{role}_n"].alias(f"__{role}_n"),
            seen[f"{role}_undervalued"].alias(f"__{role}_underv"),
            insp[f"{role}_insp_n"].alias(f"__{role}_insp"),
            insp[f"{role}_insp___finding"].alias(f"__{role}_find"),
            insp[f"{role}_insp___arms_finding"].alias(f"__{role}_arms_find"),
        ]
    chapters = distinct_query(ships, "consignee_key", "declared_at", tables.chapters, prefix="c")
    cols.append(chapters["c_distinct"].alias("__consignee_chapters"))
    q = ships.select(
        "consignee_key", "declared_at", *[_normalised(c).alias(f"__{c}") for c in CONTACT_FIELDS]
    )
    for contact in CONTACT_FIELDS:
        seen_contact = tables.contacts[contact]
        on = f"__{contact}"
        parties = distinct_query(q, on, "declared_at", seen_contact, prefix="p")["p_distinct"]
        self_seen = pair_seen_query(q, (on, "consignee_key"), "declared_at", seen_contact)
        cols.append((parties - self_seen.cast(pl.UInt32)).alias(f"__shared_{contact}"))
    days = [
        ((pl.col("__at") - pl.col(f"__{r}_first")).dt.total_microseconds() / 8.64e10).alias(
            f"__{r}_days"
        )
        for r in ROLES
    ]
    frame = pl.DataFrame([*cols, ships["declared_at"].alias("__at")])
    return frame.select(
        "shipment_id",
        *[c for c in frame.columns[1:] if c != "__at" and not c.endswith("_first")],
        *days,
    )


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
        # No first sighting before this shipment: the party is new.
        missing = (
            (f"{role.title()} never seen before", f"{ru} ранее не встречался")
            if name.endswith("days_since_first")
            else ("", "")
        )
        feature(
            F,
            desc,
            en,
            ru_text,
            kind=kind,
            fmt=fmt,
            monotone=monotone,
            missing_en=missing[0],
            missing_ru=missing[1],
        )(fn)
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
