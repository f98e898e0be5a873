"""Loader for the Harmonized System nomenclature CSV (UN Comtrade layout:
``section,hscode,description,parent,level``), e.g. ``hs_nomenclature_2022.csv``.

Codes stay strings (leading zeros matter). UN Comtrade adds rows that are not
part of the HS itself: the grand total (``hscode`` "TOTAL", level 5) and the
pseudo-chapter 99 "Commodities not specified according to kind" (section
"TOTAL"); they are dropped unless ``include_comtrade_extras=True``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_contracts.loaders import ReferenceFileError

COLUMNS: tuple[str, ...] = ("hscode", "level", "description", "parent", "section")
_NON_HS_SECTION = "TOTAL"


def load_hs_nomenclature(
    path: str | Path, *, include_comtrade_extras: bool = False
) -> pl.DataFrame:
    """Read the nomenclature: columns hscode (str), level (Int8: 2 chapter,
    4 heading, 6 subheading), description, parent (str; "TOTAL" for chapters),
    section (Roman numeral), sorted by hscode."""
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError as exc:
        raise ReferenceFileError(path, "file not found") from exc
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise ReferenceFileError(path, f"not a readable CSV: {exc}") from exc
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise ReferenceFileError(path, f"missing column(s): {', '.join(missing)}")
    frame = raw.select(
        pl.col("hscode").str.strip_chars(),
        pl.col("level").str.strip_chars().cast(pl.Int8, strict=False),
        pl.col("description").str.strip_chars(),
        pl.col("parent").str.strip_chars(),
        pl.col("section").str.strip_chars(),
    )
    if not include_comtrade_extras:
        frame = frame.filter(pl.col("section") != _NON_HS_SECTION)
    hs_rows = frame.filter(pl.col("hscode") != "TOTAL")
    bad = hs_rows.filter(
        pl.col("level").is_null()
        | ~pl.col("level").is_in([2, 4, 6])
        | ~pl.col("hscode").str.contains(r"^\d+$")
        | (pl.col("hscode").str.len_chars() != pl.col("level").cast(pl.UInt32))
    )
    if bad.height:
        first = bad.row(0, named=True)
        raise ReferenceFileError(
            path,
            f"{bad.height} row(s) whose hscode does not match its level, e.g. "
            f"hscode={first['hscode']!r} level={first['level']!r}",
        )
    if frame["hscode"].is_duplicated().any():
        raise ReferenceFileError(path, "duplicate hscode values")
    return frame.sort("hscode")


def hs_chapters(frame: pl.DataFrame) -> set[str]:
    """The two-digit chapters present in a nomenclature frame."""
    return set(frame.filter(pl.col("level") == 2)["hscode"].to_list())
