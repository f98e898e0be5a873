"""What every family receives: the shipments to compute, their goods lines, the
history known so far, and the analyst-editable reference tables."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from data_contracts.schemas import ITEMS, OUTCOMES, SHIPMENTS, TRAVELLERS
from features.names import normalise_name, normalise_names

PARTY_ROLES = ("consignor", "consignee", "declarant")

# When each input becomes known: a shipment's feature may only use rows known
# strictly before its declared_at.
KNOWN_AT = {
    "shipments": "declared_at",
    "outcomes": "inspected_at",
    "travellers": "departure_at",
}


@dataclass(frozen=True)
class Params:
    """Reference tables an analyst may edit (see features/reference/*.yaml)."""

    high_risk_countries: frozenset[str] = frozenset(
        {"AF", "PK", "IR", "SY", "IQ", "YE", "LY", "SO", "KP", "SD", "ML"}
    )
    # Natural transit corridors: (origin, destination) -> countries a lawful
    # route may cross. Any other transit country leaves the natural route.
    corridors: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    # Usual transit countries for any route into Central Asia.
    common_transit: frozenset[str] = frozenset(
        {
            "KZ",
            "KG",
            "UZ",
            "TJ",
            "TM",
            "RU",
            "CN",
            "BY",
            "PL",
            "LT",
            "LV",
            "GE",
            "AZ",
            "TR",
            "IR",
            "AE",
        }
    )
    # The tariff text that goods descriptions are compared with: a CSV of
    # `hscode,en,ru` or the UN Comtrade HS layout (features/hs_text.py); None takes
    # the project's table, data_contracts/reference/hs_headings.csv.
    hs_nomenclature_path: str | None = None
    # FX to USD, approximate annual averages (for value comparisons only).
    usd_per_unit: dict[str, float] = field(
        default_factory=lambda: {
            "USD": 1.0,
            "EUR": 1.08,
            "CNY": 0.14,
            "RUB": 0.011,
            "KZT": 0.0021,
            "UZS": 0.00008,
            "KGS": 0.0113,
            "TJS": 0.092,
            "TMT": 0.286,
            "TRY": 0.031,
            "AED": 0.272,
            "GBP": 1.27,
            "KRW": 0.00074,
            "INR": 0.012,
            "PKR": 0.0036,
            "IRR": 0.000024,
            "AFN": 0.014,
            "JPY": 0.0067,
            "PLN": 0.25,
            "CZK": 0.043,
            "GEL": 0.37,
            "AZN": 0.59,
            "UAH": 0.024,
            "SEK": 0.095,
            "HKD": 0.128,
            "SGD": 0.74,
            "MNT": 0.00029,
            "BYN": 0.31,
            "CHF": 1.13,
        }
    )
    reference_window_days: int = 365


def empty_history() -> History:
    return History(SHIPMENTS.empty(), ITEMS.empty(), OUTCOMES.empty(), TRAVELLERS.empty())


@dataclass(frozen=True)
class History:
    """Everything recorded so far (validated rows)."""

    shipments: pl.DataFrame
    items: pl.DataFrame
    outcomes: pl.DataFrame
    travellers: pl.DataFrame
    watchlist: pl.DataFrame | None = None

    def known_before(self, t: dt.datetime) -> History:
        """History as it stood just before instant t (for point-in-time checks)."""
        ships = self.shipments.filter(pl.col("declared_at") < t)
        return History(
            ships,
            self.items.join(ships.select("shipment_id"), on="shipment_id", how="semi"),
            self.outcomes.filter(pl.col("inspected_at") < t),
            self.travellers.filter(pl.col("departure_at") < t),
            self.watchlist,
        )


def lines_with_shipments(items: pl.DataFrame, ships: pl.DataFrame) -> pl.DataFrame:
    """`items.join(ships, on="shipment_id", how="inner", maintain_order="left")`:
    goods lines with the columns of their shipment (`ships`: the columns wanted,
    shipment_id among them). When every line matches exactly one shipment (the
    usual case), the lines are kept as they are and their shipments' columns
    gathered beside them, each line's shipment found by a join of the ids alone
    (the join of the frames gathers every column of both sides: twice the time);
    else (a line without its shipment, a shipment id given twice, a column name
    on both sides) the join of the frames."""
    if set(items.columns) & set(ships.columns) == {"shipment_id"}:
        ids = (
            items.select("shipment_id")
            .with_row_index("__line")
            .join(
                ships.select("shipment_id").with_row_index("__ship"),
                on="shipment_id",
                how="inner",
                maintain_order="left",
            )
        )
        line = ids.get_column("__line").to_numpy()
        if len(line) == items.height and bool((line == np.arange(items.height)).all()):
            shipped = ships.drop("shipment_id")[ids.get_column("__ship")]
            return items.hstack(shipped.get_columns())
    return items.join(ships, on="shipment_id", how="inner", maintain_order="left")


# A frame of at most this many rows gets its party keys in Python (the same keys,
# without the fixed cost of frame operations: an online call holds one shipment).
SMALL_KEYS = 32
# What the identifier rule strips: `\s` of the regex engine Polars uses (Unicode
# White_Space, which Python's `\s` exceeds), dots, slashes and hyphens.
_ID_STRIP = "[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000./-]"
_ID_STRIP_RE = re.compile(_ID_STRIP)


# Rows appended one request at a time pile up chunks; past this many they are merged.
MAX_CHUNKS = 64


def appended(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """`new` after `old`, without copying `old` (its rows are copied O(log n) times
    over many appends, not once per append): when chunks pile up past
    `MAX_CHUNKS`, those after the first are merged, or all of them when the first
    no longer holds at least half of the rows."""
    if new.is_empty():
        return old
    frame = pl.concat([old, new], how="vertical", rechunk=False)
    if frame.n_chunks() <= MAX_CHUNKS:
        return frame
    first = frame.to_series(0).chunk_lengths()[0]
    if 2 * first < frame.height:
        return frame.rechunk()
    return pl.concat([frame.slice(0, first), frame.slice(first).rechunk()], rechunk=False)


def party_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `<role>_key` for each party: its declared identification number when
    given (with the role's country), else its normalised, transliterated name.
    Two spellings of one name give one key."""
    if frame.height <= SMALL_KEYS:
        return frame.with_columns(
            pl.Series(f"{role}_key", _few_keys(frame, role), dtype=pl.String)
            for role in PARTY_ROLES
        )
    n = frame.height
    # Per role: the identification number stripped, and whether it gives the key.
    idents = frame.select(
        pl.col(f"{role}_id").cast(pl.String).str.replace_all(_ID_STRIP, "").alias(role)
        for role in PARTY_ROLES
    )
    by_id = idents.select(
        (pl.col(role).is_not_null() & (pl.col(role).str.len_chars() > 0)).alias(role)
        for role in PARTY_ROLES
    )
    # The names of the three roles normalised at once (each distinct name once),
    # only where no identification number gives the key: the other names are not
    # read (most declared parties carry one).
    names = normalise_names(
        pl.concat(
            [
                frame.select(
                    pl.when(by_id.get_column(role))
                    .then(None)
                    .otherwise(pl.col(f"{role}_name").cast(pl.String))
                ).to_series()
                for role in PARTY_ROLES
            ]
        ),
        sort_tokens=True,
    )
    keys = []
    for i, role in enumerate(PARTY_ROLES):
        keys.append(
            pl.when(pl.lit(by_id.get_column(role)))
            .then(pl.lit("id:") + pl.lit(idents.get_column(role)))
            .otherwise(pl.lit("name:") + pl.lit(names.slice(i * n, n)))
            .alias(f"{role}_key")
        )
    return frame.with_columns(keys)


def _few_keys(frame: pl.DataFrame, role: str) -> list[str | None]:
    """`party_keys`' rule for one role, row by row."""
    keys: list[str | None] = []
    ids = frame.get_column(f"{role}_id").cast(pl.String).to_list()
    names = frame.get_column(f"{role}_name").cast(pl.String).to_list()
    for ident, name in zip(ids, names, strict=True):
        stripped = None if ident is None else _ID_STRIP_RE.sub("", ident)
        if stripped:
            keys.append("id:" + stripped)
        else:
            keys.append(None if name is None else "name:" + normalise_name(name, sort_tokens=True))
    return keys
