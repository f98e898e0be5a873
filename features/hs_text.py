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
at once with sparse matrix products, then joined back to the lines. A few lines
(the API's one shipment) take the same arithmetic in numpy on each description's
row, with their texts looked up in Python (`_score_few`: no frame operations, no
sparse products, the same numbers to the bit), and pairs seen before come from a
memo. The feature is static per line (no history), so it is point in time by
construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

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


# The characters on which Python's `str.lower` and `re` (\s, \w, \b, case-insensitive
# letters) behave as Polars' (Rust's) do: ASCII but the information separators
# (\s to Python only), Latin-1 but the superscripts and fractions (\w to Python
# only), Latin, Greek and Cyrillic but dotted and dotless i (case-insensitive i to
# Python only), final-sigma rules and combining marks (\w to Rust only), general
# punctuation but joiners and connectors, currency and letterlike symbols.
# Verified character by character (tests/features/test_goods_small.py).
_PLAIN = re.compile(
    "[\x00-\x1b\x20-\xb1\xb4-\xb8\xba\xbb\xbf-\u012f\u0132-\u02ff\u0370-\u03a2"
    "\u03a4-\u0482\u048a-\u04ff\u2000-\u200b\u200e-\u203e\u2041-\u2053\u2055-\u206f"
    "\u20a0-\u20cf\u2100-\u214f]*"
)
_SPACES = re.compile(r"\s+")


def plain(text: str) -> bool:
    """Whether Python's string and regex functions treat `text` exactly as Polars'
    (see `_PLAIN`): then few texts can be handled in Python, without the fixed
    cost of Polars calls, to the same result."""
    return _PLAIN.fullmatch(text) is not None


def normalised(texts: list[str]) -> list[str]:
    """`normalise` of a few texts, in Python for the `plain` ones."""
    others = [t for t in texts if not plain(t)]
    done = iter(normalise(pl.Series(others, dtype=pl.String)).to_list() if others else [])
    return [
        " " + _SPACES.sub(" ", t.lower()).strip(" ") + " " if plain(t) else next(done)
        for t in texts
    ]


def gram_bucket(gram: str) -> int:
    """The bucket of one n-gram (the scalar twin of `ngram_counts`)."""
    h = 0
    for ch in gram:
        h = (h * int(_BASE) + ord(ch)) & _MASK
    return (((h ^ len(gram)) * int(_MIX)) & _MASK) >> (64 - BITS)


def ngram_counts(texts: pl.Series) -> sp.csr_matrix:
    """Counts of the hashed character n-grams of each text (after `normalise`):
    one row per text, N_FEATURES columns. Null texts give empty rows."""
    return hashed_counts(normalise(texts).fill_null("").to_list())


def hashed_counts(norm: list[str]) -> sp.csr_matrix:
    """`ngram_counts` of texts already normalised."""
    n = len(norm)
    lengths = np.fromiter(map(len, norm), dtype=np.int64, count=n)
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
            np.array([norm[i] for i in idx.tolist()], dtype=f"<U{width}")
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
Scores = tuple[float | None, float | None, str | None]  # one row of `score`


@dataclass(frozen=True)
class NomenclatureText:
    """The fitted model over one nomenclature text table (see the module doc)."""

    texts: pl.DataFrame  # text_id, hscode, level, lang
    idf: TfidfTransformer
    matrix: sp.csr_matrix  # one L2-normalised row per text
    arms_rows: np.ndarray  # rows of chapter 93 texts
    arms_codes: np.ndarray  # their heading (4 digits)
    # The rows of chapter 93 texts, transposed (the product with descriptions
    # would otherwise convert them, a millisecond each call).
    arms_matrix: sp.csr_matrix
    code_rows: dict[str, list[int]]  # hscode -> rows of its texts (for few lines)
    # (description, code) -> scores, for small calls (the API's one shipment): the
    # same pair always scores the same, and most descriptions recur.
    memo: dict[tuple[str | None, str | None], Scores] = field(
        default_factory=dict, compare=False, repr=False
    )
    # text row -> its buckets and weights (`_text_row`, for few lines)
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
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
        matrix = _tfidf(idf, counts)
        arms = long.with_row_index("_r").filter(pl.col("hscode").str.starts_with(ARMS_CHAPTER))
        arms_rows = arms["_r"].to_numpy().astype(np.int64)
        code_rows: dict[str, list[int]] = {}
        for code, row in zip(long["hscode"].to_list(), long["text_id"].to_list(), strict=True):
            code_rows.setdefault(code, []).append(row)
        return cls(
            long.select("text_id", "hscode", "level", "lang"),
            idf,
            matrix,
            arms_rows,
            arms["hscode"].str.slice(0, 4).to_numpy(),
            sp.csr_matrix(matrix[arms_rows].T.tocsr()),
            code_rows,
        )

    def vectors(self, descriptions: pl.Series) -> sp.csr_matrix:
        """L2-normalised TF-IDF rows of the descriptions."""
        return _tfidf(self.idf, ngram_counts(descriptions))

    def score(self, descriptions: pl.Series, codes: pl.Series) -> pl.DataFrame:
        """Per (description, declared code), in the order given: `hs_text_sim`
        (closest text of the code, null when the table has none or the
        description is null), `arms_text_sim` (closest chapter 93 text) and
        `arms_text_heading` (its heading). Calls of at most `MEMO_ROWS` lines
        answer the pairs seen before from the memo and score only the new ones."""
        if len(descriptions) > MEMO_ROWS:
            return self._score(descriptions, codes)
        rows = self.score_rows(
            descriptions.cast(pl.String).to_list(), codes.cast(pl.String).to_list()
        )
        return pl.DataFrame(rows, schema=SCORE_SCHEMA, orient="row")

    def score_many(self, descriptions: pl.Series, codes: pl.Series) -> pl.DataFrame:
        """`score` as it scores more than `MEMO_ROWS` lines (sparse products, no
        memo), for any number (a caller that passes distinct pairs of many lines)."""
        return self._score(descriptions, codes)

    def score_rows(self, descriptions: list[str | None], codes: list[str | None]) -> list[Scores]:
        """`score` of a few lines, as tuples: the pairs seen before from the memo,
        the new ones scored by `_score_few`."""
        keys = list(zip(descriptions, codes, strict=True))
        missing = [k for k in dict.fromkeys(keys) if k not in self.memo]
        if missing:
            got = self._score_few(missing)
            if len(self.memo) + len(missing) > MEMO_SIZE:
                self.memo.clear()
            self.memo.update(zip(missing, got, strict=True))
        return [self.memo[k] for k in keys]

    def _score_few(self, pairs: list[tuple[str | None, str | None]]) -> list[Scores]:
        """`_score` of a few distinct pairs: the same arithmetic on the same rows
        (so the same numbers), with numpy on each description's row instead of
        sparse products (whose fixed cost, a tenth of a millisecond each, exceeds
        the work for the lines of one shipment), the texts looked up in Python."""
        descs = list(dict.fromkeys(d for d, _ in pairs if d is not None))
        vectors = dict(zip(descs, map(self._few_row, normalised(descs)), strict=True))
        out: list[Scores] = []
        for d, c in pairs:
            if d is None:
                out.append((None, None, None))
                continue
            indices, data = vectors[d]
            best: float | None = None
            if c is not None:
                for n in LEVELS:
                    if len(c) >= n:
                        for row in self.code_rows.get(c[:n], ()):
                            sim = _few_dot(indices, data, *self._text_row(row))
                            best = sim if best is None else max(best, sim)
            arms = self._few_arms(indices, data)
            out.append((best, None, None) if arms is None else (best, *arms))
        return out

    def _few_row(self, norm: str) -> tuple[np.ndarray, np.ndarray]:
        """The TF-IDF row of one normalised text, as `_tfidf(self.idf,
        hashed_counts([norm]))` holds it: its sorted buckets and their weights
        (the same hashing, counts, IDF products and the same L2 normalisation
        routine)."""
        length = len(norm)
        codes = np.array([norm], dtype=f"<U{max(length, 1)}").view(np.uint32).astype(np.uint64)
        hashed = []
        for g in range(NGRAMS[0], NGRAMS[1] + 1):
            span = length - g + 1
            if span <= 0:
                continue
            h = np.zeros(span, dtype=np.uint64)
            for k in range(g):
                h = h * _BASE + codes[k : k + span]
            hashed.append(((h ^ np.uint64(g)) * _MIX) >> np.uint64(64 - BITS))
        if not hashed:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float64)
        buckets, counts = np.unique(np.concatenate(hashed), return_counts=True)
        indices = buckets.astype(np.int32)
        data = counts.astype(np.float64) * self.idf.idf_[indices]
        row = SimpleNamespace(
            data=data,
            shape=(1, N_FEATURES),
            indices=indices,
            indptr=np.array([0, len(indices)], dtype=np.int32),
        )
        inplace_csr_row_normalize_l2(row)
        return indices, data

    def _text_row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Row `row` of `matrix`: its sorted buckets and weights (kept)."""
        got = self.rows.get(row)
        if got is None:
            start, stop = self.matrix.indptr[row], self.matrix.indptr[row + 1]
            got = self.matrix.indices[start:stop], self.matrix.data[start:stop]
            self.rows[row] = got
        return got

    def _few_arms(self, indices: np.ndarray, data: np.ndarray) -> tuple[float, str] | None:
        """`_arms_best` of one row: `vec @ arms_matrix` accumulated as the sparse
        product does (per chapter 93 text, the products in the order of the row's
        buckets, one after the other: a cumulative sum, where a bucket absent
        from the text adds an exact 0), then the first best."""
        arms = self.arms_matrix
        texts = arms.shape[1]
        if len(self.arms_rows) == 0:
            return None
        if len(indices) == 0:
            sims = np.zeros(texts)
        else:
            starts, stops = arms.indptr[indices], arms.indptr[indices + 1]
            counts = stops - starts
            at = np.repeat(np.arange(len(indices)), counts)
            flat = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(at.size)
            dense = np.zeros((len(indices), texts))
            dense[at, arms.indices[flat]] = arms.data[flat]
            sims = np.cumsum(data[:, None] * dense, axis=0)[-1]
        best = int(sims.argmax())
        return float(sims[best]), str(self.arms_codes[best])

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
        sims, codes = self._arms_best(vec)
        if sims is None or codes is None:
            return pl.DataFrame(
                {
                    "desc": pl.Series([], dtype=pl.UInt32),
                    "arms_text_sim": pl.Series([], dtype=pl.Float64),
                    "arms_text_heading": pl.Series([], dtype=pl.String),
                }
            )
        return pl.DataFrame(
            {
                "desc": pl.Series(np.arange(len(sims)), dtype=pl.UInt32),
                "arms_text_sim": sims,
                "arms_text_heading": codes,
            }
        )

    def _arms_best(self, vec: sp.csr_matrix) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Per row of `vec`: the similarity to the closest chapter 93 text and its
        heading (the first of equals); None when there are no rows or no such text."""
        n = vec.shape[0]
        if len(self.arms_rows) == 0 or n == 0:
            return None, None
        sims = (vec @ self.arms_matrix).toarray()
        best = sims.argmax(axis=1)
        return sims[np.arange(n), best], self.arms_codes[best]


def _tfidf(idf: TfidfTransformer, counts: sp.csr_matrix) -> sp.csr_matrix:
    """`idf.transform(counts)` (L2-normalised TF-IDF rows; `counts` is reused): the
    same two steps on the data, without its input checks (they cost more than the
    steps for the few rows of an online call)."""
    counts.data *= idf.idf_[counts.indices]
    inplace_csr_row_normalize_l2(counts)
    return counts


def _few_dot(
    indices: np.ndarray, data: np.ndarray, text_indices: np.ndarray, text_data: np.ndarray
) -> float:
    """`_row_dots` of one description row with one text row: the products at the
    buckets both hold, in bucket order, zeros dropped (as the sparse elementwise
    product keeps them), summed by the same reduction, clipped."""
    if len(text_indices) == 0 or len(indices) == 0:
        return 0.0
    pos = np.searchsorted(text_indices, indices)
    pos[pos == len(text_indices)] = 0
    hit = text_indices[pos] == indices
    products = data[hit] * text_data[pos[hit]]
    products = products[products != 0]
    total = np.add.reduceat(products, [0])[0] if products.size else 0.0
    return float(np.clip(total, 0.0, 1.0))


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
