"""Does a goods description match the nomenclature text of its declared HS code?

An arms-part smuggler who declares a bolt carrier as "parts for machine tools"
must write a description; the more specific it is, the less it reads like the
tariff text of the code he chose, and the more it reads like chapter 93. This
module measures both, per goods line, with TF-IDF on character n-grams:

* the **nomenclature text** of a code: the texts (English and/or Russian) of its
  heading and, when the table has them, its subheading and national sub-codes
  (every 4/6/8/10-digit prefix of the declared code found in the table);
* the **similarity** of a line: the cosine between its description and the
  closest of those texts (so a Russian description is matched against the Russian
  text and an English one against the English text). No text for the code:
  null, not 0 (nothing is known, which is not the same as "nothing matches");
* the **arms fit**: the cosine between the description and the closest text of a
  chapter 93 heading (arms, ammunition, their parts), and which heading.

The model. Character n-grams (3 to 5 characters of the lower-cased text with
its whitespace collapsed and one space added at each end: the n-grams
scikit-learn's `analyzer="char"` yields for that text) survive inflection
("затвор", "затворная"), spelling variants and glued words. They are hashed
into 2**20 buckets (no vocabulary, so an n-gram the tariff never uses is kept)
and weighted by an IDF fitted once on the nomenclature texts (scikit-learn's
`TfidfTransformer`): an n-gram seen in no text gets the largest weight, so a
description made of words the tariff never uses scores low instead of being
judged on its few common words. The hashing is done with numpy over whole
arrays of descriptions (`ngram_counts`), three times faster than
`HashingVectorizer`'s per-string Python loop; `gram_bucket` is its scalar twin.
Fitting is deterministic (no randomness, fixed hash) and happens once per table
and process, on first use.

The texts. By default the project's own table `data_contracts/reference/
hs_headings.csv`: the HS 2022 headings the project's trade covers and the
headings where arms and their parts are declared or hidden, written for Caravan
in English and Russian (in the tariff's wording; the chapter 93 headings also
name the parts and ammunition their Explanatory Notes list). A deployment points
at its full national tariff instead (see `load_text_table` for the layouts
read: this table's `hscode,en,ru`, or the UN Comtrade nomenclature CSV); codes
outside the table get null similarity.

Scoring is vectorised: the lines' distinct (description, code) pairs are scored
at once with sparse matrix products, then joined back to the lines; the feature
is static per line (no history), so it is point in time by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer

from data_contracts.loaders import ReferenceFileError

NGRAMS = (3, 5)
BITS = 20
N_FEATURES = 2**BITS
_BASE = np.uint64(0x100000001B3)  # polynomial hash of the code points of an n-gram
_MIX = np.uint64(0x9E3779B97F4A7C15)  # multiplicative hashing into 2**BITS buckets
_MASK = 2**64 - 1
# Characters (rows x padded width) hashed per block: bounds the memory of the arrays.
BLOCK_CHARS = 2_000_000
ARMS_CHAPTER = "93"
LEVELS = (4, 6, 8, 10)
# Pairs scored per sparse product (bounds the memory of the row-wise products).
CHUNK = 200_000
DEFAULT_TABLE = "hs_headings.csv"


def default_table_path() -> Path:
    """The project's own nomenclature text table (package data of data_contracts)."""
    return Path(str(resources.files("data_contracts").joinpath("reference", DEFAULT_TABLE)))


def load_text_table(path: str | Path) -> pl.DataFrame:
    """Read a nomenclature text table: columns hscode (4 to 10 digits), en, ru.

    Layouts read:
    * Caravan's: ``hscode,en,ru`` (either text may be empty; a national tariff in
      Russian only fills ``ru``); any level (4, 6, 8 or 10 digits);
    * the UN Comtrade HS CSV (``section,hscode,description,parent,level``, read
      with `data_contracts.loaders.hs.load_hs_nomenclature`): headings and
      subheadings, English only.
    """
    path = Path(path)
    try:
        head = pl.read_csv(path, n_rows=0, infer_schema=False)
    except FileNotFoundError as exc:
        raise ReferenceFileError(path, "file not found") from exc
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise ReferenceFileError(path, f"not a readable CSV: {exc}") from exc
    if {"description", "level"} <= set(head.columns):
        from data_contracts.loaders.hs import load_hs_nomenclature

        hs = load_hs_nomenclature(path)
        table = hs.filter(pl.col("level") >= 4).select(
            "hscode", pl.col("description").alias("en"), pl.lit(None, pl.String).alias("ru")
        )
    elif "hscode" in head.columns and ({"en", "ru"} & set(head.columns)):
        raw = pl.read_csv(path, infer_schema=False)
        table = raw.select(
            pl.col("hscode").str.strip_chars(),
            *(
                (pl.col(c).str.strip_chars() if c in raw.columns else pl.lit(None, pl.String))
                .replace("", None)
                .alias(c)
                for c in ("en", "ru")
            ),
        )
    else:
        raise ReferenceFileError(
            path,
            "expected columns hscode,en,ru or the UN Comtrade layout (hscode, description, level)",
        )
    bad = table.filter(~pl.col("hscode").str.contains(r"^(?:\d{4}|\d{6}|\d{8}|\d{10})$"))
    if bad.height:
        raise ReferenceFileError(
            path,
            f"{bad.height} hscode value(s) not of 4, 6, 8 or 10 digits, e.g. {bad['hscode'][0]!r}",
        )
    if table["hscode"].is_duplicated().any():
        raise ReferenceFileError(path, "duplicate hscode values")
    return table.sort("hscode")


def normalise(texts: pl.Series) -> pl.Series:
    """Lower case, whitespace runs collapsed to one space, one space at each end."""
    cleaned = texts.cast(pl.String).str.to_lowercase().str.replace_all(r"\s+", " ")
    return " " + cleaned.str.strip_chars(" ") + " "


def gram_bucket(gram: str) -> int:
    """The bucket of one n-gram (the scalar twin of `ngram_counts`)."""
    h = 0
    for ch in gram:
        h = (h * int(_BASE) + ord(ch)) & _MASK
    return (((h ^ len(gram)) * int(_MIX)) & _MASK) >> (64 - BITS)


def ngram_counts(texts: pl.Series) -> sp.csr_matrix:
    """Counts of the hashed character n-grams of each text (after `normalise`):
    one row per text, N_FEATURES columns. Null texts give empty rows."""
    norm = normalise(texts).fill_null("")
    n = len(norm)
    lengths = norm.str.len_chars().to_numpy().astype(np.int64)
    order = np.argsort(lengths, kind="stable")  # blocks of similar lengths: little padding
    by_length = lengths[order]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    start = 0
    while start < n:
        # The longest block from `start` whose rows x widest row fits in BLOCK_CHARS.
        size = by_length[start:] * np.arange(1, n - start + 1)
        stop = start + max(int(np.searchsorted(size, BLOCK_CHARS, side="right")), 1)
        idx = order[start:stop]
        width = max(int(lengths[idx[-1]]), 1)
        codes = (
            np.array(norm.gather(idx).to_list(), dtype=f"<U{width}")
            .view(np.uint32)
            .reshape(len(idx), width)
            .astype(np.uint64)
        )
        for g in range(NGRAMS[0], NGRAMS[1] + 1):
            span = width - g + 1
            if span <= 0:
                continue
            h = np.zeros((len(idx), span), dtype=np.uint64)
            for k in range(g):
                h = h * _BASE + codes[:, k : k + span]
            valid = np.arange(span)[None, :] + g <= lengths[idx][:, None]
            buckets = ((h[valid] ^ np.uint64(g)) * _MIX) >> np.uint64(64 - BITS)
            rows.append(np.broadcast_to(idx[:, None], valid.shape)[valid])
            cols.append(buckets.astype(np.int64))
        start = stop
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, N_FEATURES))


MEMO_ROWS = 64
MEMO_SIZE = 200_000
SCORE_SCHEMA = {
    "hs_text_sim": pl.Float64,
    "arms_text_sim": pl.Float64,
    "arms_text_heading": pl.String,
}


@dataclass(frozen=True)
class NomenclatureText:
    """The fitted model over one nomenclature text table (see the module doc)."""

    texts: pl.DataFrame  # text_id, hscode, level, lang
    idf: TfidfTransformer
    matrix: sp.csr_matrix  # one L2-normalised row per text
    arms_rows: np.ndarray  # rows of chapter 93 texts
    arms_codes: np.ndarray  # their heading (4 digits)
    # (description, code) -> scores, for small calls (the API's one shipment): the
    # same pair always scores the same, and most descriptions recur.
    memo: dict[tuple[str | None, str | None], tuple[float | None, float | None, str | None]] = (
        field(default_factory=dict, compare=False, repr=False)
    )

    @classmethod
    def fit(cls, table: pl.DataFrame) -> NomenclatureText:
        long = (
            table.unpivot(index="hscode", on=["en", "ru"], variable_name="lang", value_name="text")
            .drop_nulls("text")
            .sort("hscode", "lang")
            .with_row_index("text_id")
            .with_columns(pl.col("hscode").str.len_chars().cast(pl.Int8).alias("level"))
        )
        if long.height == 0:
            raise ValueError("the nomenclature text table has no text")
        counts = ngram_counts(long["text"])
        idf = TfidfTransformer(norm="l2", smooth_idf=True).fit(counts)
        matrix = sp.csr_matrix(idf.transform(counts))
        arms = long.with_row_index("_r").filter(pl.col("hscode").str.starts_with(ARMS_CHAPTER))
        return cls(
            long.select("text_id", "hscode", "level", "lang"),
            idf,
            matrix,
            arms["_r"].to_numpy().astype(np.int64),
            arms["hscode"].str.slice(0, 4).to_numpy(),
        )

    def vectors(self, descriptions: pl.Series) -> sp.csr_matrix:
        """L2-normalised TF-IDF rows of the descriptions."""
        return sp.csr_matrix(self.idf.transform(ngram_counts(descriptions)))

    def score(self, descriptions: pl.Series, codes: pl.Series) -> pl.DataFrame:
        """Per (description, declared code), in the order given: `hs_text_sim`
        (closest text of the code, null when the table has none or the
        description is null), `arms_text_sim` (closest chapter 93 text) and
        `arms_text_heading` (its heading). Calls of at most `MEMO_ROWS` lines
        answer the pairs seen before from the memo and score only the new ones."""
        if len(descriptions) > MEMO_ROWS:
            return self._score(descriptions, codes)
        keys = list(
            zip(
                descriptions.cast(pl.String).to_list(),
                codes.cast(pl.String).to_list(),
                strict=True,
            )
        )
        missing = [k for k in dict.fromkeys(keys) if k not in self.memo]
        if missing:
            got = self._score(
                pl.Series([k[0] for k in missing], dtype=pl.String),
                pl.Series([k[1] for k in missing], dtype=pl.String),
            )
            if len(self.memo) + len(missing) > MEMO_SIZE:
                self.memo.clear()
            self.memo.update(zip(missing, got.iter_rows(), strict=True))
        return pl.DataFrame([self.memo[k] for k in keys], schema=SCORE_SCHEMA, orient="row")

    def _score(self, descriptions: pl.Series, codes: pl.Series) -> pl.DataFrame:
        pairs = pl.DataFrame({"description": descriptions, "hs_code": codes}).cast(pl.String)
        distinct = pairs.unique(maintain_order=True).with_row_index("pair")
        descs = (
            distinct.select("description").drop_nulls().unique(maintain_order=True)
        ).with_row_index("desc")
        vec = self.vectors(descs["description"])
        # Every text of every prefix of the declared code.
        texts = self.texts.select("text_id", "hscode")
        wanted = pl.concat(
            [
                distinct.filter(pl.col("hs_code").str.len_chars() >= n).select(
                    "pair", "description", pl.col("hs_code").str.slice(0, n).alias("hscode")
                )
                for n in LEVELS
            ]
        )
        jobs = (
            wanted.join(texts, on="hscode", how="inner")
            .join(descs, on="description", how="inner")
            .select("pair", "desc", "text_id")
        )
        sims = _row_dots(vec, self.matrix, jobs["desc"].to_numpy(), jobs["text_id"].to_numpy())
        best = (
            jobs.select("pair", pl.Series("sim", sims))
            .group_by("pair")
            .agg(pl.col("sim").max().alias("hs_text_sim"))
        )
        arms = self._arms(vec).join(descs, on="desc").drop("desc")
        out = (
            distinct.join(best, on="pair", how="left")
            .join(arms, on="description", how="left")
            .sort("pair")
        )
        return pairs.join(
            out.drop("pair"),
            on=["description", "hs_code"],
            how="left",
            maintain_order="left",
            nulls_equal=True,
        ).select("hs_text_sim", "arms_text_sim", "arms_text_heading")

    def _arms(self, vec: sp.csr_matrix) -> pl.DataFrame:
        n = vec.shape[0]
        if len(self.arms_rows) == 0 or n == 0:
            return pl.DataFrame(
                {
                    "desc": pl.Series([], dtype=pl.UInt32),
                    "arms_text_sim": pl.Series([], dtype=pl.Float64),
                    "arms_text_heading": pl.Series([], dtype=pl.String),
                }
            )
        sims = (vec @ self.matrix[self.arms_rows].T).toarray()
        best = sims.argmax(axis=1)
        return pl.DataFrame(
            {
                "desc": pl.Series(np.arange(n), dtype=pl.UInt32),
                "arms_text_sim": sims[np.arange(n), best],
                "arms_text_heading": self.arms_codes[best],
            }
        )


def _row_dots(
    a: sp.csr_matrix, b: sp.csr_matrix, rows_a: np.ndarray, rows_b: np.ndarray
) -> np.ndarray:
    """Dot products of row rows_a[k] of `a` with row rows_b[k] of `b`, for every k."""
    out = np.empty(len(rows_a), dtype=np.float64)
    for start in range(0, len(rows_a), CHUNK):  # chunks of pairs, not rows of lines
        stop = start + CHUNK
        prod = a[rows_a[start:stop]].multiply(b[rows_b[start:stop]])
        out[start:stop] = np.asarray(prod.sum(axis=1)).ravel()
    return np.clip(out, 0.0, 1.0)


@lru_cache(maxsize=4)
def _fitted(path: str) -> NomenclatureText:
    return NomenclatureText.fit(load_text_table(path))


def nomenclature_text(path: str | Path | None = None) -> NomenclatureText:
    """The fitted model of a table (default: the project's), fitted once per process."""
    return _fitted(str(Path(path).resolve()) if path is not None else str(default_table_path()))
