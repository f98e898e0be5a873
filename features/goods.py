"""Family 2: what the goods are, and whether their declared values and masses fit."""

from __future__ import annotations

import datetime as dt

import polars as pl

from features.context import Params
from features.hs_text import NomenclatureText, nomenclature_text
from features.registry import Family, feature
from features.timeline import AsOfTable, as_of_query

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


def _month(expr: pl.Expr) -> pl.Expr:
    return expr.dt.truncate("1mo")


def _line_frame(ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> pl.DataFrame:
    fx = pl.col("invoice_currency").replace_strict(
        params.usd_per_unit, default=None, return_dtype=pl.Float64
    )
    return items.join(
        ships.select("shipment_id", "declared_at", fx.alias("__fx")),
        on="shipment_id",
        how="inner",
        maintain_order="left",
    ).with_columns(
        pl.col("hs_code").str.slice(0, 6).alias("hs6"),
        (pl.col("hs_code").str.slice(0, 6) + "|" + pl.col("origin_country")).alias("hs6_origin"),
        (pl.col("value") * pl.col("__fx") / pl.col("net_mass_kg")).log().alias("__luv"),
        (pl.col("net_mass_kg") / pl.col("quantity")).log().alias("__lmpu"),
        _month(pl.col("declared_at")).alias("__month"),
    )


def _reference_lines(lines: pl.DataFrame, value: str) -> pl.DataFrame:
    return lines.drop_nulls(value).with_columns((pl.col(value) ** 2).alias("__sq"))


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
    it does not depend on the history)."""

    def __init__(
        self, tables: dict[tuple[str, str], AsOfTable], text: NomenclatureText | None = None
    ):
        self.tables = tables
        self.text = text if text is not None else nomenclature_text()

    @classmethod
    def build(cls, ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> Reference:
        ref = _line_frame(ships, items, params)
        return cls(
            {
                (value, key): AsOfTable.build(
                    _reference_lines(ref, value), key, "__month", [value, "__sq"]
                )
                for value in VALUES
                for key in KEYS
            },
            nomenclature_for(params),
        )

    def append(self, ships: pl.DataFrame, items: pl.DataFrame, params: Params) -> None:
        """Add the lines of shipments declared no earlier than those already held."""
        ref = _line_frame(ships, items, params)
        for (value, _), table in self.tables.items():
            table.append(_reference_lines(ref, value))


VALUES = ("__luv", "__lmpu")
KEYS = ("hs6_origin", "hs6")


def _reference_z(lines: pl.DataFrame, ref: Reference, value: str, params: Params) -> pl.Series:
    """z-score of each line's `value` against the same HS6 x origin (else HS6) over
    the reference window before the line's month: only data known before it."""
    window = {"ref": dt.timedelta(days=params.reference_window_days)}
    z: pl.Series | None = None
    for key in KEYS:
        stats = as_of_query(
            lines, key, "__month", ref.tables[(value, key)], windows=window, prefix="r"
        )
        n = pl.col("r_n_ref").cast(pl.Float64)
        mean = pl.col(f"r_{value}_ref") / n
        var = (pl.col("r___sq_ref") / n - mean**2).clip(lower_bound=0.04)
        zk = (
            stats.with_columns(lines[value])
            .select(
                pl.when(n >= MIN_REFERENCE).then(
                    ((pl.col(value) - mean) / var.sqrt()).clip(-10, 10)
                )
            )
            .to_series()
        )
        z = zk if z is None else z.fill_null(zk)
    assert z is not None
    return z


def prepare(
    ships: pl.DataFrame, items: pl.DataFrame, reference: Reference, params: Params
) -> pl.DataFrame:
    """Intermediate columns, one row per shipment (same order); `reference` holds
    the lines recorded so far (`Reference.build` over the history)."""
    lines = _line_frame(ships, items, params)
    ref = reference
    text = ref.text.score(lines["description"], lines["hs_code"])
    lines = pl.concat([lines, text], how="horizontal").with_columns(
        pl.col("hs_text_sim").alias("__hs_sim"),
        pl.when(pl.col("hs_code").str.slice(0, 2) != ARMS_CHAPTER)
        .then(pl.col("arms_text_sim") - pl.col("hs_text_sim"))
        .alias("__arms_gap"),
        pl.col("arms_text_heading").alias("__arms_heading"),
    )
    lines = lines.with_columns(
        _reference_z(lines, ref, "__luv", params).alias("__uv_z"),
        _reference_z(lines, ref, "__lmpu", params).alias("__mpu_z"),
        pl.col("hs_code")
        .str.slice(0, 2)
        .replace_strict(CHAPTER_RISK, default=0.0, return_dtype=pl.Float64)
        .alias("__risk"),
        pl.col("hs_code").str.slice(0, 4).is_in(sorted(HIDING_HEADINGS)).alias("__hiding"),
        pl.col("description").str.count_matches(_ARMS).alias("__arms_terms"),
        pl.col("description").str.count_matches(_PARTS).alias("__part_terms"),
    )
    per_ship = lines.group_by("shipment_id").agg(
        pl.col("__risk").max().alias("__chapter_risk"),
        (pl.col("hs_code").str.slice(0, 2) == "93").sum().alias("__ch93"),
        pl.col("__hiding").mean().alias("__hiding_share"),
        pl.col("__arms_terms").sum(),
        pl.col("__part_terms").sum(),
        pl.col("__uv_z").min().alias("__min_uv_z"),
        pl.col("__mpu_z").abs().max().alias("__max_mpu_z"),
        pl.col("hs_code").str.slice(0, 2).n_unique().alias("__chapters"),
        pl.col("hs_code")
        .sort_by(pl.col("__risk"), pl.col("value"), descending=True)
        .first()
        .str.slice(0, 4)
        .alias("hs4_main"),
        (pl.col("value").max() / pl.col("value").sum()).alias("__top_line_share"),
        *_text_aggregates(),
    )
    return ships.select("shipment_id").join(
        per_ship, on="shipment_id", how="left", maintain_order="left"
    )


CONTEXT_CHARS = 60  # a description quoted in a reason text is cut to this length


def _text_aggregates() -> list[pl.Expr]:
    """Per shipment: the lowest description-to-code similarity and the line that
    has it; the largest margin by which a line reads more like an arms heading
    than like its declared code, the line and that heading (ties: first line)."""
    worst = [pl.col("__hs_sim").fill_null(2.0), pl.col("line_no")]
    armsy = [pl.col("__arms_gap").fill_null(-2.0), -pl.col("line_no")]
    has_sim = pl.col("__hs_sim").is_not_null().any()
    has_gap = pl.col("__arms_gap").is_not_null().any()
    return [
        pl.col("__hs_sim").min().alias("__hs_text_sim"),
        pl.when(has_sim)
        .then(pl.col("description").sort_by(worst).first().str.slice(0, CONTEXT_CHARS))
        .alias("hs_text_line"),
        pl.when(has_sim)
        .then(pl.col("hs_code").sort_by(worst).first().str.slice(0, 6))
        .alias("hs_text_code"),
        pl.col("__arms_gap").max().alias("__arms_margin"),
        pl.when(has_gap)
        .then(
            pl.col("description")
            .sort_by(armsy, descending=True)
            .first()
            .str.slice(0, CONTEXT_CHARS)
        )
        .alias("arms_fit_line"),
        pl.when(has_gap)
        .then(pl.col("__arms_heading").sort_by(armsy, descending=True).first())
        .alias("arms_fit_heading"),
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
    "{value} позиц. заявлено как оружие или боеприпасы (группа 93)",
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
    "В описании упомянуто оружие или боеприпасы ({value} терм.)",
    monotone=1,
)
def arms_terms() -> pl.Expr:
    return pl.col("__arms_terms")


@feature(
    F,
    "Firearm part terms in the descriptions: barrel, trigger, bolt, magazine, "
    "ствол, затвор, магазин...",
    "Description uses firearm-part words ({value})",
    "В описании слова, обозначающие части оружия ({value})",
    monotone=1,
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
)
def min_unit_value_z() -> pl.Expr:
    return pl.col("__min_uv_z")


@feature(
    F,
    "Largest |z| of a line's mass per unit against the same HS6 and origin",
    "Mass per unit unusual for the goods declared (|z| = {value})",
    "Масса единицы товара необычна для заявленного товара (|z| = {value})",
    fmt="{:.1f}",
)
def max_mass_per_unit_z() -> pl.Expr:
    return pl.col("__max_mpu_z")


@feature(
    F,
    "Distinct HS chapters in one declaration",
    "Mixed consignment: {value} HS chapters",
    "Сборная партия: {value} групп ТН ВЭД",
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
    "tariff's own wording; empty when the tariff table has no text for the code)",
    "Description '{hs_text_line}' hardly matches the tariff text of HS {hs_text_code} "
    "(similarity {value})",
    "Описание «{hs_text_line}» плохо соответствует тексту ТН ВЭД {hs_text_code} (сходство {value})",
    fmt="{:.2f}",
    monotone=-1,  # the less a description reads like its code, the more suspicious
)
def description_hs_similarity() -> pl.Expr:
    return pl.col("__hs_text_sim")


@feature(
    F,
    "Largest margin by which a line's description is closer to the text of an arms or "
    "ammunition heading (HS 9301-9307) than to the text of its declared code "
    "(lines declared outside chapter 93)",
    "Description '{arms_fit_line}' resembles the text of HS {arms_fit_heading} (arms, "
    "ammunition) unusually closely for its declared code (similarity to HS "
    "{arms_fit_heading} minus similarity to the declared code: {value})",
    "Описание «{arms_fit_line}» необычно близко к тексту ТН ВЭД {arms_fit_heading} "
    "(оружие, боеприпасы) для заявленного кода (сходство с {arms_fit_heading} минус "
    "сходство с заявленным кодом: {value})",
    fmt="{:+.2f}",
    monotone=1,
)
def description_arms_margin() -> pl.Expr:
    return pl.col("__arms_margin")
