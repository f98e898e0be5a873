"""Family 2: what the goods are, and whether their declared values and masses fit."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from features import hs_text
from features.context import Params, lines_with_shipments
from features.hs_text import NomenclatureText, nomenclature_text, plain
from features.registry import Family, Wording, feature
from features.timeline import AsOfTable, as_of_columns, as_of_query

F = Family.GOODS

# Risk of an HS chapter for arms trafficking: chapter 93 itself, then the
# chapters its legal notes push general-use parts into (base-metal parts 73/82/84,
# plastics 39, optics 90, detonators 36) and sporting goods (95).
CHAPTER_RISK: dict[str, float] = {
    "93": 1.0, "36": 0.6, "90": 0.4, "95": 0.3, "84": 0.2, "82": 0.2, "73": 0.2,
    "87": 0.15, "39": 0.15, "83": 0.15, "74": 0.1, "85": 0.1,
}  # fmt: skip
# Headings where misdeclared firearm parts, ammunition and optics are found.
HIDING_HEADINGS = frozenset({
    "8466", "8483", "8481", "8482", "8205", "8207", "8708", "9506", "7307", "7318",
    "7412", "7326", "3926", "9013", "9005", "8525", "9002", "6913", "8431",
})  # fmt: skip
ARMS_TERMS = (
    r"firearms?|rifles?|pistols?|revolvers?|shotguns?|carbines?|ammunition|ammo|cartridges?"
    r"|bullets?|primers?|gunpowder|suppressors?|silencers?|firing pins?|bolt carriers?"
    r"|night vision|thermal (?:imaging |)(?:sight|scope)s?|riflescopes?|calibre|caliber"
    r"|9\s?mm|7[.,]62|5[.,]45|5[.,]56|\.223|\.308|12\s?ga(?:uge)?"
    r"|оруж\w*|винтовк\w*|пистолет\w*|револьвер\w*|ружь\w*|ружье|карабин\w*|патрон\w*"
    r"|боеприпас\w*|пул[яиь]\w*|капсюл\w*|порох\w*|глушител\w*|ударник\w*|прицел\w*"
    r"|ночного видения|тепловиз\w*|калибр\w*"
)
PART_TERMS = (
    r"barrels?|triggers?|receivers?|magazines?|slides?|stocks?|grips?|muzzle\w*|sears?"
    r"|handguards?|buffer tubes?|recoil springs?|hammer springs?|bolts? assembl\w*"
    r"|ствол\w*|затвор\w*|магазин\w*|спуск\w*|курок\w*|приклад\w*|цевь\w*|рукоят\w*"
    r"|пружин\w*|возвратн\w*"
)
ARMS_CHAPTER = "93"
_ARMS = rf"(?i)\b(?:{ARMS_TERMS})\b"
_PARTS = rf"(?i)\b(?:{PART_TERMS})\b"
MIN_REFERENCE = 5  # earlier lines needed before a value is compared with them
# The description features of a shipment none of whose lines could be compared
# (`_text_aggregates`): the end of each range that reads as no risk. Not null:
# a model that saw no null for a feature in training reads one as 0 (LightGBM
# does), which is the risky side of both; and a null once shared by "declared
# under chapter 93" and "no tariff text" was learned as arms (UAT2 DS F1). Both
# features are monotone, so these values can never score above a compared one.
NO_ARMS_MARGIN = -1.0  # no line outside chapter 93 compared: none reads as arms
NO_TEXT_SIMILARITY = 1.0  # no line's code has tariff text: no mismatch is known
# The smallest margin (as the reason text shows it, to two decimals) said to make a
# description resemble an arms heading "unusually closely": below it the
# description is about as close to both texts (of the margins above zero in a
# synthetic year, needles, cookies, jumpers and "sports goods, other" lie below
# 0.05; trigger kits and bolt carriers for tools, above).
ARMS_MARGIN_CLOSE = 0.05


def _shown_margin(margin: float) -> float:
    """A margin as `description_arms_margin`'s reason text shows it ("+0.01")."""
    return float(f"{margin:+.2f}")


# `prepare` and `Reference.append` of at most this many shipments and lines (the
# API's one shipment) compute per line in Python (`_few_lines`, `_prepare_few`):
# the same values, without the fixed cost of a dozen frame operations.
SMALL = 64


def _month(expr: pl.Expr) -> pl.Expr:
    return expr.dt.truncate("1mo")


def _line_frame(ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> pl.DataFrame:
    fx = pl.col("invoice_currency").replace_strict(
        params.usd_per_unit, default=None, return_dtype=pl.Float64
    )
    # (only the columns read: the join gathers every column of the lines; the
    # month of each shipment, not of each of its lines)
    joined = lines_with_shipments(
        items.select(*LINE_COLUMNS, "net_mass_kg", "quantity"),
        ships.select(
            "shipment_id",
            "declared_at",
            fx.alias("__fx"),
            _month(pl.col("declared_at")).alias("__month"),
        ),
    )
    return joined.with_columns(
        pl.col("hs_code").str.slice(0, 6).alias("hs6"),
        (pl.col("hs_code").str.slice(0, 6) + "|" + pl.col("origin_country")).alias("hs6_origin"),
        (pl.col("value") * pl.col("__fx") / pl.col("net_mass_kg")).log().alias("__luv"),
        (pl.col("net_mass_kg") / pl.col("quantity")).log().alias("__lmpu"),
    ).select(pl.exclude("__month"), "__month")  # (the columns in their order before)


def _reference_lines(lines: pl.DataFrame, value: str) -> pl.DataFrame:
    """The lines with a `value`: their KEYS, month, value and its square (the
    columns the reference tables read; not the other columns of the lines)."""
    return (
        lines.select(*KEYS, "__month", value)
        .drop_nulls(value)
        .with_columns((pl.col(value) ** 2).alias("__sq"))
    )


def _small(ships: pl.DataFrame, items: pl.DataFrame) -> bool:
    return ships.height <= SMALL and items.height <= SMALL


# The columns of `_line_frame` the family reads; `_few_lines` gives them as lists.
LINE_COLUMNS = ("shipment_id", "line_no", "hs_code", "description", "value", "origin_country")


def _few_lines(ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> dict[str, list]:
    """`_line_frame` of a few lines, in Python, column by column (`LINE_COLUMNS`,
    hs6, hs6_origin, __luv, __lmpu, __month): the same values, as Python's float
    arithmetic is IEEE's and its logarithm the C library's, as Polars'."""
    fx = params.usd_per_unit
    by_id: dict[object, list[tuple[dt.datetime | None, float | None]]] = {}
    for sid, at, currency in zip(
        *(
            ships.get_column(c).to_list()
            for c in ("shipment_id", "declared_at", "invoice_currency")
        ),
        strict=True,
    ):
        if sid is not None:  # (a join matches no null key)
            rate = fx.get(currency) if currency is not None else None
            month = (  # (`_month`: the first instant of the month, in the time's zone)
                None if at is None else at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            )
            by_id.setdefault(sid, []).append((month, None if rate is None else float(rate)))
    names = (*LINE_COLUMNS, "net_mass_kg", "quantity")
    cols: dict[str, list] = {
        c: [] for c in (*LINE_COLUMNS, "hs6", "hs6_origin", "__luv", "__lmpu", "__month")
    }
    for row in zip(*(items.get_column(c).to_list() for c in names), strict=True):
        line = dict(zip(names, row, strict=True))
        for month, rate in by_id.get(line["shipment_id"], ()):
            for c in LINE_COLUMNS:
                cols[c].append(line[c])
            code, value, mass = line["hs_code"], line["value"], line["net_mass_kg"]
            hs6 = None if code is None else code[:6]
            origin = line["origin_country"]
            cols["hs6"].append(hs6)
            cols["hs6_origin"].append(None if hs6 is None or origin is None else f"{hs6}|{origin}")
            cols["__luv"].append(
                _ln(_ratio(None if value is None or rate is None else value * rate, mass))
            )
            cols["__lmpu"].append(_ln(_ratio(mass, line["quantity"])))
            cols["__month"].append(month)
    return cols


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b as Polars divides: null when either is, ±inf or NaN by zero."""
    if a is None or b is None:
        return None
    if b == 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(a) / np.float64(b))
    return a / b


def _ln(x: float | None) -> float | None:
    """Natural logarithm as Polars takes it (the C library's; -inf at 0, NaN below)."""
    if x is None:
        return None
    if x > 0:
        return math.log(x)
    return -math.inf if x == 0 else math.nan


def _few_reference_lines(lines: dict[str, list], value: str, time: pl.DataType) -> pl.DataFrame:
    """`_reference_lines` of `_few_lines` (the columns the tables read)."""
    columns = [lines[key] for key in (*KEYS, "__month", value)]
    return pl.DataFrame(
        [(*row, row[-1] * row[-1]) for row in zip(*columns, strict=True) if row[-1] is not None],
        schema={
            **dict.fromkeys(KEYS, pl.String),
            "__month": time,
            value: pl.Float64,
            "__sq": pl.Float64,
        },
        orient="row",
    )


def nomenclature_for(params: Params) -> NomenclatureText:
    """The nomenclature text model: the deployment's tariff when its `Params` name
    one (`hs_nomenclature_path`, a CSV `features.hs_text.load_text_table` reads),
    else the project's own table."""
    return nomenclature_text(params.hs_nomenclature_path)


class Reference:
    """Per HS6 x origin and per HS6, and per month: cumulative count, sum and sum
    of squares of the log unit value and of the log mass per unit of the lines
    recorded so far (the `_cumulative` tables `_reference_z` reads); and the
    fitted nomenclature text model the descriptions are compared with (static:
    it does not depend on the history).

    A build (or an append of many shipments) keeps the line frame
    (`_line_frame`) it computed, for the `prepare` of the same frames that
    usually follows (the history's, in a batch): taken once (`lines_of`), then
    dropped."""

    def __init__(
        self, tables: dict[tuple[str, str], AsOfTable], text: NomenclatureText | None = None
    ):
        self.tables = tables
        self.text = text if text is not None else nomenclature_text()
        # (ships, items, params, their `_line_frame`, the frames' shapes): see `lines_of`
        self._lines: tuple[pl.DataFrame, pl.DataFrame, Params, pl.DataFrame, tuple] | None = None

    @classmethod
    def build(cls, ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> Reference:
        ref = _line_frame(ships, items, params)
        built = cls(_reference_tables(ref), nomenclature_for(params))
        built._keep(ships, items, params, ref)
        return built

    def _keep(
        self, ships: pl.DataFrame, items: pl.DataFrame, params: Params, lines: pl.DataFrame
    ) -> None:
        self._lines = (ships, items, params, lines, _shape(ships, items))

    def lines_of(self, ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> pl.DataFrame:
        """`_line_frame(ships, items, params)`: the one the last build or append
        computed when it was of these very frames (the same objects, of the same
        heights and columns since: none grown in place) and parameters, else
        computed now. The one kept is dropped either way (a batch asks once; it
        holds every line)."""
        kept, self._lines = self._lines, None
        if kept is not None:
            held_ships, held_items, held_params, lines, shape = kept
            if (
                held_ships is ships
                and held_items is items
                and held_params == params
                and shape == _shape(ships, items)
            ):
                return lines
        return _line_frame(ships, items, params)

    def append(self, ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> None:
        """Add the lines of shipments declared no earlier than those already held."""
        if _small(ships, items):
            self._lines = None
            lines = _few_lines(ships, items, params)
            time = ships.schema["declared_at"]
            for value in VALUES:
                events = _few_reference_lines(lines, value, time)
                for key in KEYS:
                    self.tables[(value, key)].append(events)
            return
        self._lines = None
        ref = _line_frame(ships, items, params)
        by_value = {value: _reference_lines(ref, value) for value in VALUES}  # (once per value)
        for (value, _), table in self.tables.items():
            table.append(by_value[value])
        self._keep(ships, items, params, ref)


def _reference_tables(lines: pl.DataFrame) -> dict[tuple[str, str], AsOfTable]:
    """The `Reference` tables of some lines (`_line_frame`): per value and key,
    `AsOfTable.build` of the lines with that value (`_reference_lines`). When
    every line has both values (the usual case), both values' tables of a key
    are built from one grouping of the lines (`AsOfTable.build_each`: the same
    lines, so the same tables)."""
    if any(lines.get_column(value).has_nulls() for value in VALUES):
        events = {value: _reference_lines(lines, value) for value in VALUES}  # (once per value)
        return {
            (value, key): AsOfTable.build(events[value], key, "__month", [value, "__sq"])
            for value in VALUES
            for key in KEYS
        }
    squares = {value: f"__sq{value}" for value in VALUES}
    both = lines.select(
        *KEYS, "__month", *VALUES, *[(pl.col(v) ** 2).alias(sq) for v, sq in squares.items()]
    )
    sums = [{value: value, "__sq": squares[value]} for value in VALUES]
    built = {key: AsOfTable.build_each(both, key, "__month", sums) for key in KEYS}
    return {(value, key): built[key][i] for i, value in enumerate(VALUES) for key in KEYS}


def _shape(ships: pl.DataFrame, items: pl.DataFrame) -> tuple:
    """The heights and columns of the frames a line frame was computed from."""
    return (ships.height, items.height, tuple(ships.columns), tuple(items.columns))


VALUES = ("__luv", "__lmpu")
KEYS = ("hs6_origin", "hs6")


def _reference_z(
    queries: pl.DataFrame,
    values: np.ndarray,
    known: np.ndarray,
    ref: Reference,
    value: str,
    params: Params,
    pairs: dict[str, tuple[pl.DataFrame, np.ndarray | None]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """z-score of each line's `value` (`known`: not null) against the same HS6 x
    origin (else HS6) over the reference window before the line's month: only data
    known before it. `queries`: the lines' KEYS and __month; `pairs`: a memo of
    their `_distinct_pairs` per key, shared by the calls for each value. Returns
    the scores and whether the line has one (a value and MIN_REFERENCE earlier
    lines; a score may still be NaN, from NaN data). One formula for any number
    of lines, in numpy (its IEEE operations give what the Polars expressions gave)."""
    window = {"ref": dt.timedelta(days=params.reference_window_days)}
    z = np.full(len(values), np.nan)
    scored = np.zeros(len(values), dtype=bool)
    pairs = {} if pairs is None else pairs
    for key in KEYS:
        if key not in pairs:
            pairs[key] = _distinct_pairs(queries, key)
        asked, pair = pairs[key]
        table = ref.tables[(value, key)]
        if pair is None:  # (few lines: the light answer, without a frame)
            light = as_of_columns(asked, key, "__month", table, windows=window, prefix="r")
            stats: dict[str, Any] = light.values
        else:
            stats = as_of_query(asked, key, "__month", table, windows=window, prefix="r").to_dict()

        # Each asked pair's mean and deviation, then read back per line by position
        # (the same operations on the same numbers, once per pair, not per line).
        n = np.asarray(stats["r_n_ref"], dtype=np.float64)
        with np.errstate(all="ignore"):
            mean = np.asarray(stats[f"r_{value}_ref"], dtype=np.float64) / n
            var = np.clip(
                np.asarray(stats["r___sq_ref"], dtype=np.float64) / n - mean**2, 0.04, None
            )
            deviation = np.sqrt(var)
            enough = n >= MIN_REFERENCE
            if pair is not None:
                mean, deviation, enough = mean[pair], deviation[pair], enough[pair]
            zk = np.clip((values - mean) / deviation, -10, 10)
        take = known & ~scored & enough
        z[take] = zk[take]
        scored |= take
        if not (known & ~scored).any():  # (the other key would add nothing)
            break
    return z, scored


# Lines share their (key, month): past this many lines, each distinct pair is
# asked once and its answer read back by position (the same answers).
DISTINCT_MIN_LINES = 64


def _distinct_pairs(queries: pl.DataFrame, key: str) -> tuple[pl.DataFrame, np.ndarray | None]:
    """The distinct (key, `__month`) pairs of the lines in `queries` and, per line,
    the row of its pair (None: few lines, asked as they are)."""
    if queries.height <= DISTINCT_MIN_LINES:
        return queries, None  # (the frame as given: its lookups are cached on it)
    return _distinct_rows(queries.select(key, "__month"))


def _key_pairs(queries: pl.DataFrame) -> dict[str, tuple[pl.DataFrame, np.ndarray | None]]:
    """`_distinct_pairs` of the lines in `queries` for every key of KEYS (the memo
    `_reference_z` takes), from one grouping of the lines: their distinct (KEYS,
    `__month`) rows, then the distinct pairs of each key among those few rows
    (the same pairs, in another order: each is asked alone). Few lines: none
    (`_reference_z` asks them as they are)."""
    if queries.height <= DISTINCT_MIN_LINES:
        return {}
    rows, row = _distinct_rows(queries.select(*KEYS, "__month"))
    out: dict[str, tuple[pl.DataFrame, np.ndarray | None]] = {}
    for key in KEYS:
        asked, pair = _distinct_rows(rows.select(key, "__month"))
        out[key] = (asked, pair[row])
    return out


def _distinct_rows(frame: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """The distinct rows of `frame` in order of first occurrence (nulls one group,
    as a join with nulls equal matches them; `unique(maintain_order=True)`'s
    rows) and, per row of `frame`, the row of its distinct row: one grouping, no
    join."""
    # Each row's first equal row (one grouping, no lists of rows): the rows that
    # are their own first are the distinct rows, numbered in order.
    first = (
        frame.with_row_index("__line")
        .select(pl.col("__line").first().over(frame.columns))
        .to_series()
        .to_numpy()
    )
    own = first == np.arange(frame.height)
    number = np.cumsum(own, dtype=np.int64) - 1
    return frame.filter(pl.Series(own)), number[first]


def prepare(
    ships: pl.DataFrame, items: pl.DataFrame, reference: Reference, params: Params
) -> pl.DataFrame:
    """Intermediate columns, one row per shipment (same order); `reference` holds
    the lines recorded so far (`Reference.build` over the history)."""
    if _small(ships, items):
        return _prepare_few(ships, items, reference, params)
    lines = reference.lines_of(ships, items, params)
    ref = reference
    # (each line's chapter sliced once, for the columns and aggregates below)
    lines = pl.concat([lines, _pair_columns(lines, ref.text)], how="horizontal").with_columns(
        pl.col("hs_code").str.slice(0, 2).alias("__chapter")
    )
    lines = lines.with_columns(
        pl.col("hs_text_sim").alias("__hs_sim"),
        pl.when(pl.col("__chapter") != ARMS_CHAPTER)
        .then(pl.col("arms_text_sim") - pl.col("hs_text_sim"))
        .alias("__arms_gap"),
        pl.col("arms_text_heading").alias("__arms_heading"),
    )
    queries = lines.select(*KEYS, "__month")
    z = {}
    pairs = _key_pairs(queries)
    for value, name in (("__luv", "__uv_z"), ("__lmpu", "__mpu_z")):
        column = lines.get_column(value)
        known = column.is_not_null().to_numpy()
        scores, scored = _reference_z(queries, column.to_numpy(), known, ref, value, params, pairs)
        z[name] = pl.Series(name, scores).scatter(np.flatnonzero(~scored), None)
    lines = lines.with_columns(
        *z.values(),
        pl.col("__chapter")
        .replace_strict(CHAPTER_RISK, default=0.0, return_dtype=pl.Float64)
        .alias("__risk"),
        pl.col("hs_code").str.slice(0, 4).is_in(sorted(HIDING_HEADINGS)).alias("__hiding"),
    )
    # (groups in order of first line: the same groups and values, and faster)
    per_ship = (
        lines.group_by("shipment_id", maintain_order=True)
        .agg(
            pl.col("__risk").max().alias("__chapter_risk"),
            (pl.col("__chapter") == "93").sum().alias("__ch93"),
            pl.col("__hiding").mean().alias("__hiding_share"),
            pl.col("__arms_terms").sum(),
            pl.col("__part_terms").sum(),
            pl.col("__uv_z").min().alias("__min_uv_z"),
            pl.col("__mpu_z").abs().max().alias("__max_mpu_z"),
            pl.col("__chapter").n_unique().alias("__chapters"),
            pl.col("hs_code")
            .sort_by(pl.col("__risk"), pl.col("value"), descending=True)
            .first()
            .str.slice(0, 4)
            .alias("hs4_main"),
            (pl.col("value").max() / pl.col("value").sum()).alias("__top_line_share"),
            *_text_aggregates(),
            _word_list("__part_words").alias("__part_word_list"),
        )
        .unnest(*TEXT_PICKS)
        .with_columns(_joined_words("__part_word_list").alias("part_words"))
        .drop("__part_word_list")
    )
    ids = ships.get_column("shipment_id")
    if per_ship.height == ids.len() and per_ship.get_column("shipment_id").equals(ids):
        return per_ship  # (every shipment has lines, in the order given: the join's rows)
    return ids.to_frame().join(per_ship, on="shipment_id", how="left", maintain_order="left")


def _pair_columns(lines: pl.DataFrame, text: NomenclatureText) -> pl.DataFrame:
    """Per line (many), what depends on its description and code alone: the
    tariff-text scores (`NomenclatureText.score`: hs_text_sim, arms_text_sim,
    arms_text_heading) and the lexicon counts (`_term_frame`: __arms_terms,
    __part_terms). Computed once per distinct (description, code) pair and read
    back by position (lines repeat their pairs: no join of the lines). Few lines
    (at most `hs_text.MEMO_ROWS`): `score` of the lines as they are (its memo)."""
    if lines.height <= hs_text.MEMO_ROWS:
        asked, pair = lines, None
        scores = text.score(lines["description"], lines["hs_code"])
    else:
        asked, pair = _distinct_rows(lines.select("description", "hs_code"))
        scores = text.score_many(asked["description"], asked["hs_code"])
    terms = asked.select("description").join(
        _term_frame(asked), on="description", how="left", maintain_order="left", nulls_equal=True
    )
    out = pl.concat([scores, terms.drop("description")], how="horizontal")
    return out if pair is None else out[pair]


def _term_frame(lines: pl.DataFrame) -> pl.DataFrame:
    """The lexicon counts of each distinct description of `lines` (declarations
    repeat their descriptions: a regex pass over each distinct text, not each line),
    and the firearm-part words matched, in lower case (for the reason text only)."""
    return lines.select(pl.col("description").unique()).with_columns(
        pl.col("description").str.count_matches(_ARMS).alias("__arms_terms"),
        pl.col("description").str.count_matches(_PARTS).alias("__part_terms"),
        pl.col("description")
        .str.extract_all(_PARTS)
        .list.eval(pl.element().str.to_lowercase())
        .alias("__part_words"),
    )


# At most this many distinct firearm-part words are named in the context
# (`part_words`), in alphabetical order; more are marked ", …".
PART_WORDS_SHOWN = 5


def _word_list(column: str) -> pl.Expr:
    """Per shipment (an aggregate): the distinct words of the lines' word lists,
    sorted."""
    return pl.col(column).list.explode(keep_nulls=False, empty_as_null=False).unique().sort()


def _joined_words(column: str) -> pl.Expr:
    """A shipment's sorted distinct words as the context names them ("barrels,
    trigger"; null for none): `_words_text` in Polars."""
    words = pl.col(column)
    more = pl.when(words.list.len() > PART_WORDS_SHOWN).then(pl.lit(", …")).otherwise(pl.lit(""))
    return (
        pl.when(words.list.len() > 0)
        .then(words.list.head(PART_WORDS_SHOWN).list.join(", ") + more)
        .otherwise(None)
    )


def _words_text(words: set[str]) -> str | None:
    """`_joined_words` of one shipment's words."""
    if not words:
        return None
    ordered = sorted(words)  # (code-point order: Polars' order of UTF-8 strings)
    text = ", ".join(ordered[:PART_WORDS_SHOWN])
    return text + ", …" if len(ordered) > PART_WORDS_SHOWN else text


# `prepare`'s columns (what `_prepare_few` builds).
PREPARED_SCHEMA = {
    "shipment_id": pl.String,
    "__chapter_risk": pl.Float64,
    "__ch93": pl.UInt32,
    "__hiding_share": pl.Float64,
    "__arms_terms": pl.UInt32,
    "__part_terms": pl.UInt32,
    "__min_uv_z": pl.Float64,
    "__max_mpu_z": pl.Float64,
    "__chapters": pl.UInt32,
    "hs4_main": pl.String,
    "__top_line_share": pl.Float64,
    "__hs_text_sim": pl.Float64,
    "hs_text_line": pl.String,
    "hs_text_code": pl.String,
    "__arms_margin": pl.Float64,
    "arms_fit_line": pl.String,
    "arms_fit_heading": pl.String,
    "part_words": pl.String,  # context: the firearm-part words matched (`_words_text`)
}
_COMPILED = {pattern: re.compile(pattern) for pattern in (_ARMS, _PARTS)}


def _term_counts(descriptions: list[str | None], pattern: str) -> list[int | None]:
    """`str.count_matches(pattern)` of a few descriptions: Python's `re` for the
    `plain` ones (it matches them as Polars' regex does), Polars for the others."""
    compiled = _COMPILED[pattern]
    others = [d for d in descriptions if d is not None and not plain(d)]
    # (a Polars regex call costs a millisecond even without texts: only for others)
    counted = pl.Series(others, dtype=pl.String).str.count_matches(pattern) if others else None
    done = iter([] if counted is None else counted.to_list())
    return [
        None if d is None else sum(1 for _ in compiled.finditer(d)) if plain(d) else next(done)
        for d in descriptions
    ]


def _term_words(descriptions: list[str | None], counts: list[int | None]) -> list[list[str]]:
    """The firearm-part words each of a few descriptions matches (`counts`: its
    `_term_counts` of `_PARTS`; none counted, none looked for), in lower case:
    `_term_frame`'s `__part_words`, in Python for the `plain` ones."""
    compiled = _COMPILED[_PARTS]
    others = [
        d for d, n in zip(descriptions, counts, strict=True) if n and d is not None and not plain(d)
    ]
    done = iter(
        pl.Series(others, dtype=pl.String)
        .str.extract_all(_PARTS)
        .list.eval(pl.element().str.to_lowercase())
        .to_list()
        if others
        else []
    )
    return [
        []
        if not n or d is None
        else [m.group(0).lower() for m in compiled.finditer(d)]
        if plain(d)
        else next(done)
        for d, n in zip(descriptions, counts, strict=True)
    ]


def _prepare_few(
    ships: pl.DataFrame, items: pl.DataFrame, ref: Reference, params: Params
) -> pl.DataFrame:
    """`prepare` of a few shipments, per line in Python (see SMALL), the
    aggregates of `prepare`'s group_by in `_aggregate_few`."""
    lines = _few_lines(ships, items, params)
    codes, descriptions = lines["hs_code"], lines["description"]
    scores = ref.text.score_rows(descriptions, codes)
    queries = pl.DataFrame(  # (rows: cheaper to build than columns)
        list(zip(*(lines[key] for key in (*KEYS, "__month")), strict=True)),
        schema={**dict.fromkeys(KEYS, pl.String), "__month": ships.schema["declared_at"]},
        orient="row",
    )
    z = []
    for value in VALUES:
        values = lines[value]
        scores_z, scored = _reference_z(
            queries,
            np.array([np.nan if v is None else v for v in values], dtype=np.float64),
            np.array([v is not None for v in values], dtype=bool),
            ref,
            value,
            params,
        )
        z.append([float(v) if s else None for v, s in zip(scores_z, scored, strict=True)])
    part_counts = _term_counts(descriptions, _PARTS)
    per_line: dict[str, list] = {
        "__risk": [CHAPTER_RISK.get(c[:2], 0.0) if c is not None else 0.0 for c in codes],
        "__hiding": [c[:4] in HIDING_HEADINGS if c is not None else None for c in codes],
        "__arms_terms": _term_counts(descriptions, _ARMS),
        "__part_terms": part_counts,
        "__part_words": _term_words(descriptions, part_counts),
        "__uv_z": z[0],
        "__mpu_z": z[1],
        "__hs_sim": [s[0] for s in scores],
        "__arms_gap": [
            s[1] - s[0]
            if c is not None and c[:2] != ARMS_CHAPTER and s[0] is not None and s[1] is not None
            else None
            for c, s in zip(codes, scores, strict=True)
        ],
        "__arms_heading": [s[2] for s in scores],
    }
    rows: dict[object, list[int]] = {}
    for i, sid in enumerate(lines["shipment_id"]):
        rows.setdefault(sid, []).append(i)
    columns = {**lines, **per_line}
    out = []
    for sid in ships.get_column("shipment_id").to_list():
        got = rows.get(sid)
        agg = _aggregate_few({c: [v[i] for i in got] for c, v in columns.items()}) if got else {}
        out.append((sid, *(agg.get(c) for c in list(PREPARED_SCHEMA)[1:])))
    return pl.DataFrame(out, schema=PREPARED_SCHEMA, orient="row")


def _aggregate_few(line: dict[str, list]) -> dict[str, object]:
    """`prepare`'s per-shipment aggregates of one shipment's lines (columns as
    lists), with Polars' semantics: nulls skipped; NaN above every number in a
    sort and ignored by min and max unless nothing else is there; a sort's ties
    in line order; sums as `_group_sum`."""
    codes, values, descriptions = line["hs_code"], line["value"], line["description"]
    chapters = [None if c is None else c[:2] for c in codes]
    n = range(len(codes))
    hiding = [h for h in line["__hiding"] if h is not None]
    main = min(n, key=lambda i: (_order(line["__risk"][i], True), _order(values[i], True)))
    top = _extreme(values, max)
    out: dict[str, object] = {
        "__chapter_risk": _extreme(line["__risk"], max),
        "__ch93": sum(c == "93" for c in chapters),
        "__hiding_share": sum(hiding) / len(hiding) if hiding else None,
        "__arms_terms": sum(t for t in line["__arms_terms"] if t is not None),
        "__part_terms": sum(t for t in line["__part_terms"] if t is not None),
        "__min_uv_z": _extreme(line["__uv_z"], min),
        "__max_mpu_z": _extreme([None if v is None else abs(v) for v in line["__mpu_z"]], max),
        "__chapters": len(set(chapters)),
        "hs4_main": None if codes[main] is None else codes[main][:4],
        "__top_line_share": _ratio(top, _group_sum(values)),
        "__hs_text_sim": _or(_extreme(line["__hs_sim"], min), NO_TEXT_SIMILARITY),
        "__arms_margin": _or(_extreme(line["__arms_gap"], max), NO_ARMS_MARGIN),
        "part_words": _words_text({w for words in line["__part_words"] for w in words}),
    }
    sims, gaps, numbers = line["__hs_sim"], line["__arms_gap"], line["line_no"]
    if any(s is not None for s in sims):
        worst = min(
            n,
            key=lambda i: (
                _order(2.0 if sims[i] is None else sims[i], False),
                _order(numbers[i], False),
            ),
        )
        text = descriptions[worst]
        out["hs_text_line"] = None if text is None else text[:CONTEXT_CHARS]
        out["hs_text_code"] = None if codes[worst] is None else codes[worst][:6]
    if any(g is not None for g in gaps):
        armsy = min(
            n,
            key=lambda i: (
                _order(-2.0 if gaps[i] is None else gaps[i], True),
                _order(None if numbers[i] is None else -numbers[i], True),
            ),
        )
        text = descriptions[armsy]
        out["arms_fit_line"] = None if text is None else text[:CONTEXT_CHARS]
        out["arms_fit_heading"] = line["__arms_heading"][armsy]
    return out


def _or(value: Any, default: float) -> Any:
    """`fill_null(default)` of one aggregate."""
    return default if value is None else value


def _order(v: float | None, descending: bool) -> tuple[int, int, float]:
    """Sort key of a value as Polars sorts (ascending keys): nulls first, NaN above
    every number."""
    if v is None:
        return (0, 0, 0.0)
    if v != v:
        return (1, 0 if descending else 1, 0.0)
    return (1, 1, -v) if descending else (1, 0, v)


def _extreme(values: list, pick: Callable) -> Any:
    """Polars' min or max (`pick`): nulls skipped, NaN only when nothing else."""
    present = [v for v in values if v is not None]
    numbers = [v for v in present if v == v]
    return pick(numbers) if numbers else (math.nan if present else None)


def _group_sum(values: list[float | None]) -> float:
    """The sum of a group as Polars' group_by takes it (nulls skipped; one value
    as is; else Kahan-compensated from 0, the compensation kept only while
    finite), so that a few lines give the sums of the batch."""
    present = [v for v in values if v is not None]
    if len(values) == 1 and present:
        return present[0]
    total, err = 0.0, 0.0
    for v in present:
        y = v - err
        new = total + y
        e = (new - total) - y
        total = new
        if math.isfinite(e):
            err = e
    return total


CONTEXT_CHARS = 60  # a description quoted in a reason text is cut to this length


# The structs `_text_aggregates` picks the quoted lines' columns in (unnested).
TEXT_PICKS = ("__hs_text_pick", "__arms_fit_pick")


def _text_aggregates() -> list[pl.Expr]:
    """Per shipment: the lowest description-to-code similarity over the lines
    whose code has tariff text, and the line that has it (none:
    NO_TEXT_SIMILARITY, and no line); the largest margin by which a line
    declared outside chapter 93 and compared reads more like an arms heading
    than like its declared code, the line and that heading (ties: first line;
    no such line, because every line is declared in chapter 93 or none has
    tariff text: NO_ARMS_MARGIN, the bottom of the range, and no line). Each
    line's columns are picked together, in a struct (`TEXT_PICKS`: one sort per
    shipment for both)."""
    worst = [pl.col("__hs_sim").fill_null(2.0), pl.col("line_no")]
    armsy = [pl.col("__arms_gap").fill_null(-2.0), -pl.col("line_no")]
    has_sim = pl.col("__hs_sim").is_not_null().any()
    has_gap = pl.col("__arms_gap").is_not_null().any()
    return [
        pl.col("__hs_sim").min().fill_null(NO_TEXT_SIMILARITY).alias("__hs_text_sim"),
        pl.when(has_sim)
        .then(
            pl.struct(
                pl.col("description").str.slice(0, CONTEXT_CHARS).alias("hs_text_line"),
                pl.col("hs_code").str.slice(0, 6).alias("hs_text_code"),
            )
            .sort_by(worst)
            .first()
        )
        .alias(TEXT_PICKS[0]),
        pl.col("__arms_gap").max().fill_null(NO_ARMS_MARGIN).alias("__arms_margin"),
        pl.when(has_gap)
        .then(
            pl.struct(
                pl.col("description").str.slice(0, CONTEXT_CHARS).alias("arms_fit_line"),
                pl.col("__arms_heading").alias("arms_fit_heading"),
            )
            .sort_by(armsy, descending=True)
            .first()
        )
        .alias(TEXT_PICKS[1]),
    ]


def undervalued_flags(prepared: pl.DataFrame) -> pl.DataFrame:
    """shipment_id -> whether any line is declared far below the usual value per kg
    (`prepared`: the output of `prepare`)."""
    return prepared.select(
        "shipment_id", (pl.col("__min_uv_z") < -2.0).fill_null(False).alias("undervalued")
    )


@feature(
    F,
    "Highest arms-trafficking risk of the HS chapters declared (chapter 93 = 1)",
    "Goods under HS {hs4_main}, a heading where arms or their parts are declared or hidden",
    "Товары по позиции ТН ВЭД {hs4_main}, где декларируют или скрывают оружие и его части",
    fmt="{:.2f}",
)
def hs_chapter_risk() -> pl.Expr:
    return pl.col("__chapter_risk")


@feature(
    F,
    "Goods lines declared in chapter 93 (arms and ammunition)",
    "{value} line(s) declared as arms or ammunition (HS chapter 93)",
    "{value} {value|позиция заявлена|позиции заявлены|позиций заявлено} как оружие или "
    "боеприпасы (группа 93)",
    monotone=1,
)
def arms_chapter_lines() -> pl.Expr:
    return pl.col("__ch93")


@feature(
    F,
    "Share of lines under headings where arms parts are often misdeclared",
    "Goods declared under headings where firearm parts are often hidden (HS {hs4_main})",
    "Товары заявлены по позициям, где часто скрывают части оружия (ТН ВЭД {hs4_main})",
    fmt="{:.0%}",
)
def hiding_heading_share() -> pl.Expr:
    return pl.col("__hiding_share")


@feature(
    F,
    "Firearm or ammunition terms in the descriptions (English, Russian)",
    "Description mentions firearms or ammunition ({value} term(s))",
    "В описании упомянуто оружие или боеприпасы ({value} {value|термин|термина|терминов})",
    monotone=1,
    wordings=(
        Wording(
            lambda v, _c: v == 0,
            "No firearm or ammunition terms in the descriptions",
            "В описаниях нет слов, обозначающих оружие или боеприпасы",
        ),
    ),
)
def arms_terms() -> pl.Expr:
    return pl.col("__arms_terms")


@feature(
    F,
    "Firearm part terms in the descriptions: barrel, trigger, bolt, magazine, "
    "ствол, затвор, магазин...",
    # {part_words}: the words matched, so that a false match can be seen ("barrels"
    # in "steel barrels 200 l for oil"); {value} counts their occurrences.
    "Description uses firearm-part words: {part_words} ({value} {value|match|matches})",
    "В описании слова, обозначающие части оружия: {part_words} ({value} "
    "{value|совпадение|совпадения|совпадений})",
    monotone=1,
    wordings=(
        Wording(
            lambda v, _c: v == 0,
            "No firearm-part words in the descriptions",
            "В описаниях нет слов, обозначающих части оружия",
        ),
        # a score stored before the words were kept in its context
        Wording(
            lambda v, c: v is not None and not c.get("part_words"),
            "Description uses firearm-part words ({value} {value|match|matches})",
            "В описании слова, обозначающие части оружия ({value} "
            "{value|совпадение|совпадения|совпадений})",
        ),
    ),
)
def part_terms() -> pl.Expr:
    return pl.col("__part_terms")


@feature(
    F,
    "Lowest robust z-score of a line's value per kg against the same HS6 and "
    "origin over the past year",
    "Declared value per kg far below usual for HS {hs4_main} from {origin_country} (z = {value})",
    "Заявленная стоимость за кг намного ниже обычной для ТН ВЭД {hs4_main} из "
    "{origin_country} (z = {value})",
    fmt="{:.1f}",
    missing_en="No usual value per kg known for the goods declared (HS {hs4_main} from "
    "{origin_country})",
    missing_ru="Обычная стоимость за кг для заявленного товара неизвестна (ТН ВЭД {hs4_main} "
    "из {origin_country})",
    wordings=(
        Wording(
            lambda v, _c: v is not None and v > 2.0,
            "Declared value per kg far above usual for HS {hs4_main} from {origin_country} "
            "(z = {value})",
            "Заявленная стоимость за кг намного выше обычной для ТН ВЭД {hs4_main} из "
            "{origin_country} (z = {value})",
        ),
        Wording(
            lambda v, _c: v is not None and -2.0 <= v <= 2.0,
            "Lowest declared value per kg of the lines, compared with the usual for HS "
            "{hs4_main} from {origin_country}: z = {value}",
            "Наименьшая заявленная стоимость за кг по позициям в сравнении с обычной для "
            "ТН ВЭД {hs4_main} из {origin_country}: z = {value}",
        ),
    ),
)
def min_unit_value_z() -> pl.Expr:
    return pl.col("__min_uv_z")


@feature(
    F,
    "Largest |z| of a line's mass per unit against the same HS6 and origin",
    "Mass per unit unusual for the goods declared (|z| = {value})",
    "Масса единицы товара необычна для заявленного товара (|z| = {value})",
    fmt="{:.1f}",
    missing_en="No usual mass per unit known for the goods declared",
    missing_ru="Обычная масса единицы для заявленного товара неизвестна",
    wordings=(
        Wording(
            lambda v, _c: v is not None and v <= 2.0,
            "Mass per unit close to usual for the goods declared (|z| = {value})",
            "Масса единицы товара близка к обычной для заявленного товара (|z| = {value})",
        ),
    ),
)
def max_mass_per_unit_z() -> pl.Expr:
    return pl.col("__max_mpu_z")


@feature(
    F,
    "Distinct HS chapters in one declaration",
    "Mixed consignment: {value} HS {value|chapter|chapters}",
    "Сборная партия: {value} {value|группа|группы|групп} ТН ВЭД",
)
def distinct_chapters() -> pl.Expr:
    return pl.col("__chapters")


@feature(
    F,
    "Share of the declared value in the most valuable line",
    "One line carries {value} of the value",
    "Одна позиция составляет {value} стоимости",
    fmt="{:.0%}",
)
def top_line_value_share() -> pl.Expr:
    return pl.col("__top_line_share")


@feature(
    F,
    "Lowest similarity between a line's description and the nomenclature text of its "
    "declared HS code (TF-IDF cosine on character n-grams, English or Russian; 1 = the "
    "tariff's own wording), over the lines whose code has text in the tariff table; 1 "
    "when none has (not compared: a missing text is no evidence)",
    "Description '{hs_text_line}' hardly matches the tariff text of HS {hs_text_code} "
    "(similarity {value})",
    "Описание «{hs_text_line}» плохо соответствует тексту ТН ВЭД {hs_text_code} (сходство {value})",
    fmt="{:.2f}",
    missing_en="The tariff table has no text to compare the descriptions with",
    missing_ru="В тарифе нет текста для сравнения с описаниями товаров",
    wordings=(
        # not compared: no line's code has tariff text (no line is quoted)
        Wording(
            lambda v, c: v == NO_TEXT_SIMILARITY and c.get("hs_text_line") is None,
            "The tariff table has no text to compare the descriptions with",
            "В тарифе нет текста для сравнения с описаниями товаров",
        ),
        Wording(
            lambda v, _c: v is not None and v >= 0.5,
            "Description '{hs_text_line}' matches the tariff text of HS {hs_text_code} only "
            "in part (similarity {value})",
            "Описание «{hs_text_line}» лишь отчасти соответствует тексту ТН ВЭД "
            "{hs_text_code} (сходство {value})",
        ),
    ),
    monotone=-1,  # the less a description reads like its code, the more suspicious
)
def description_hs_similarity() -> pl.Expr:
    return pl.col("__hs_text_sim")


@feature(
    F,
    "Largest margin by which a line's description is closer to the text of an arms or "
    "ammunition heading (HS 9301-9307) than to the text of its declared code, over the "
    "lines declared outside chapter 93 whose code has tariff text; -1 (the bottom of the "
    "range) when there is no such line: every line is declared in chapter 93, or no "
    "line's code has tariff text",
    "Description '{arms_fit_line}' resembles the text of HS {arms_fit_heading} (arms, "
    "ammunition) unusually closely for its declared code (similarity to HS "
    "{arms_fit_heading} minus similarity to the declared code: {value})",
    "Описание «{arms_fit_line}» необычно близко к тексту ТН ВЭД {arms_fit_heading} "
    "(оружие, боеприпасы) для заявленного кода (сходство с {arms_fit_heading} минус "
    "сходство с заявленным кодом: {value})",
    fmt="{:+.2f}",
    monotone=1,
    missing_en="No description compared with the arms headings (no tariff text for the "
    "declared codes)",
    missing_ru="Описания не сравнивались с позициями оружия (нет текста тарифа для "
    "заявленных кодов)",
    wordings=(
        # no line compared (none is quoted), goods under chapter 93: arms declared
        # as arms (null: a score stored before -1 was used, UAT2 DS F1)
        Wording(
            lambda v, c: (
                (v is None or v == NO_ARMS_MARGIN)
                and c.get("arms_fit_line") is None
                and str(c.get("hs4_main") or "").startswith(ARMS_CHAPTER)
            ),
            "Goods declared under chapter 93 (arms and ammunition)",
            "Товары заявлены в группе 93 ТН ВЭД (оружие и боеприпасы)",
        ),
        # no line compared, none under chapter 93: no tariff text for their codes
        Wording(
            lambda v, c: v == NO_ARMS_MARGIN and c.get("arms_fit_line") is None,
            "No description compared with the arms headings (no tariff text for the "
            "declared codes)",
            "Описания не сравнивались с позициями оружия (нет текста тарифа для заявленных кодов)",
        ),
        # a margin below zero: the description is closer to its own code
        Wording(
            lambda v, _c: v is not None and v <= 0,
            "Description '{arms_fit_line}' is closer to the text of its declared code than "
            "to HS {arms_fit_heading} (arms, ammunition), but less clearly than usual "
            "(similarity to HS {arms_fit_heading} minus similarity to the declared code: "
            "{value})",
            "Описание «{arms_fit_line}» ближе к тексту заявленного кода, чем к ТН ВЭД "
            "{arms_fit_heading} (оружие, боеприпасы), но менее явно, чем обычно (сходство "
            "с {arms_fit_heading} минус сходство с заявленным кодом: {value})",
        ),
        # a margin above zero but too small to mean anything (as shown: "+0.01"):
        # about as close to the arms heading as to its own code (review s24: "sports
        # goods, other" read as "unusually close" to HS 9303 at +0.01)
        Wording(
            lambda v, _c: v is not None and _shown_margin(v) < ARMS_MARGIN_CLOSE,
            "Description '{arms_fit_line}' is about as close to the text of HS "
            "{arms_fit_heading} (arms, ammunition) as to the text of its declared code "
            "(similarity to HS {arms_fit_heading} minus similarity to the declared code: "
            "{value})",
            "Описание «{arms_fit_line}» примерно так же близко к тексту ТН ВЭД "
            "{arms_fit_heading} (оружие, боеприпасы), как к тексту заявленного кода "
            "(сходство с {arms_fit_heading} минус сходство с заявленным кодом: {value})",
        ),
    ),
)
def description_arms_margin() -> pl.Expr:
    return pl.col("__arms_margin")
