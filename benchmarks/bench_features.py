"""Feature speed: batch Polars features against the same features written in pandas,
and the online call for one new shipment against the whole history.

    .venv/bin/python benchmarks/bench_features.py --shipments 1000000 --pandas-sample 100000 \
        --online 200

Prints, from one run on this machine:
* batch features for all shipments (Polars, `features.build.build_features`);
* on a sample: the whole Polars pipeline (every feature); then family by
  family, the same features written in pandas
  as a good pandas user would (vectorised groupby, merge_asof, str methods over
  distinct values, the same transliteration and tariff-text functions and the
  same n-gram hashing and IDF; no loops over rows) beside the Polars step of that
  family (its tables and its intermediate columns), with a check that both give
  the same values (max |diff|, same missing values, values differing) and the
  per-row ratio per family and over every family pandas covers: the shipment and
  route, goods and trader history families (52 of the 66 features); watchlist
  screening, traveller linkage and the network are timed in Polars only. Every
  timing starts with the memos of name normalisation and screening emptied (a
  run before over similar names would leave them warm), and the pandas inputs
  are converted from the Polars frames before the timings;
* every party screened against the UN Security Council list (read from the shared
  reference data beside the checkout, when present) and the example national list;
* the feature state over the full history (`features.state.FeatureState`): build
  and warm-up time, and the time of a rebuild as the service makes in the
  background when shipments arrive late (`serving.history`);
* online features for single new shipments (copies of history shipments declared
  just after it) against that state (p50, p99), and appending one shipment.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import polars as pl

from data_contracts.loaders.national import load_national_csv
from data_contracts.loaders.un_sc import load_un_consolidated
from data_contracts.readers import from_frame
from data_contracts.schemas import ARMS_CATEGORIES, CONTRACTS
from data_contracts.validate import validate_tables
from features import goods, network, screening, shipment, trader, travellers
from features import names as names_module
from features import watchlist as watchlist_family
from features.build import build_features, model_columns, online_features
from features.context import _ID_STRIP as ID_STRIP
from features.context import PARTY_ROLES, History, Params, party_keys
from features.goods import (
    _ARMS,
    _PARTS,
    ARMS_CHAPTER,
    CHAPTER_RISK,
    HIDING_HEADINGS,
    MIN_REFERENCE,
    NO_ARMS_MARGIN,
    NO_TEXT_SIMILARITY,
    nomenclature_for,
)
from features.hs_text import LEVELS, NomenclatureText, _row_dots, _tfidf, hashed_counts
from features.names import normalise_name, shared_normalisation
from features.registry import REGISTRY, Kind, specs
from features.state import FeatureState
from pipelines.synthetic import WorldConfig, generate_world

T = TypeVar("T")
WINDOWS = {"7d": "7D", "30d": "30D", "90d": "90D", "365d": "365D"}


ROOT = Path(__file__).resolve().parents[1]
# The real UN Security Council list, where the project's checkout sits beside the
# shared reference data; else the project's example national list.
UN_XML = ROOT.parent / "shared" / "reference" / "un_sc_consolidated_2018-10-29.xml"
NATIONAL = ROOT / "data_contracts" / "reference" / "national_watchlist_example.csv"


def watchlist() -> pl.DataFrame:
    """The lists every party is screened against: the UN list (when present) and
    the example national list."""
    lists = [load_national_csv(NATIONAL, "KZ-demo")]
    if UN_XML.exists():
        lists.insert(0, load_un_consolidated(UN_XML))
    return pl.concat(lists, how="vertical_relaxed")


def history_of(n: int, seed: int) -> History:
    world = generate_world(WorldConfig(n_shipments=n, seed=seed, broken_share=0.0))
    raw = {
        t: from_frame(getattr(world, t), CONTRACTS[t])
        for t in ("shipments", "items", "travellers", "outcomes")
    }
    ok = validate_tables(raw).tables
    return History(
        ok["shipments"].accepted,
        ok["items"].accepted,
        ok["outcomes"].accepted,
        ok["travellers"].accepted,
        watchlist(),
    )


@dataclass(frozen=True)
class PandasInputs:
    """The history as pandas frames (what a pandas user reads from the files)."""

    ships: pd.DataFrame
    items: pd.DataFrame
    outcomes: pd.DataFrame


def pandas_inputs(h: History) -> PandasInputs:
    ships = h.shipments.with_columns(pl.col("mode").cast(pl.String)).to_pandas()
    outcomes = h.outcomes.with_columns(pl.col("finding_category").cast(pl.String)).to_pandas()
    return PandasInputs(ships, h.items.to_pandas(), outcomes)


def _codes(values: pd.Series, name: str) -> pd.Series:
    """A categorical feature's stable integer codes (0: unknown or missing)."""
    cats = REGISTRY[name].categories
    return pd.Series(pd.Categorical(values, categories=cats).codes + 1, index=values.index)


def _fx(s: pd.DataFrame, params: Params) -> pd.Series:
    return s["invoice_currency"].map(params.usd_per_unit).astype(float)


def pandas_shipment(d: PandasInputs, params: Params) -> pd.DataFrame:
    """Family 1, the shipment and its route."""
    s = d.ships
    out = pd.DataFrame(index=pd.Index(s["shipment_id"], name="shipment_id"))
    out["mode"] = _codes(s["mode"], "mode").to_numpy()
    out["origin_country_code"] = _codes(s["origin_country"], "origin_country_code").to_numpy()
    out["dispatch_country_code"] = _codes(s["dispatch_country"], "dispatch_country_code").to_numpy()
    transit = s[["shipment_id", "transit_countries"]].explode("transit_countries")
    country = transit["transit_countries"]
    per = (
        pd.DataFrame(
            {
                "shipment_id": transit["shipment_id"],
                "off": country.notna() & ~country.isin(params.common_transit),
                "risky": country.isin(params.high_risk_countries),
            }
        )
        .groupby("shipment_id", sort=False)
        .agg(off=("off", "sum"), risky=("risky", "any"))
    )
    out["transit_count"] = s["transit_countries"].str.len().fillna(0).to_numpy()
    out["transit_off_route"] = per["off"].reindex(out.index).to_numpy()
    risky = params.high_risk_countries
    origin = s["origin_country"].isin(risky).astype("boolean").mask(s["origin_country"].isna())
    dispatch = (
        s["dispatch_country"].isin(risky).astype("boolean").mask(s["dispatch_country"].isna())
    )
    out["high_risk_origin"] = (origin | dispatch).to_numpy(dtype=float, na_value=np.nan)
    out["high_risk_transit"] = per["risky"].reindex(out.index).astype(int).to_numpy()
    out["lead_time_hours"] = (
        (s["expected_arrival_at"] - s["declared_at"]) / pd.Timedelta(hours=1)
    ).to_numpy()
    out["item_count"] = (
        d.items.groupby("shipment_id").size().reindex(out.index).fillna(0).to_numpy()
    )
    value = s["invoice_amount"] * _fx(s, params)
    with np.errstate(all="ignore"):
        out["log_gross_mass"] = np.log10(s["gross_mass_kg"]).to_numpy()
        out["log_value_usd"] = np.log10(value).to_numpy()
        out["log_value_per_kg"] = np.log10(value / s["gross_mass_kg"]).to_numpy()
        out["mass_per_package"] = (s["gross_mass_kg"] / s["package_count"]).to_numpy()
    return out


def _text_scores(lines: pd.DataFrame, text: NomenclatureText) -> pd.DataFrame:
    """Per line: similarity of its description with the closest tariff text of its
    code's prefixes, and with the closest chapter 93 text (its heading): each
    distinct description vectorised once (the project's hashed n-grams and IDF),
    each distinct (description, code) pair scored once, joined back."""
    descs = pd.Series(lines["description"].dropna().unique())
    norm = " " + descs.str.lower().str.replace(r"\s+", " ", regex=True).str.strip(" ") + " "
    vec = _tfidf(text.idf, hashed_counts(norm.tolist()))
    desc_row = pd.Series(np.arange(len(descs)), index=descs.to_numpy())
    pairs = lines[["description", "hs_code"]].drop_duplicates().reset_index(drop=True)
    texts = text.texts.select("text_id", "hscode").to_pandas()
    wanted = pd.concat(
        [
            pairs.loc[pairs["hs_code"].str.len() >= n].assign(
                hscode=lambda p, n=n: p["hs_code"].str[:n]
            )
            for n in LEVELS
        ]
    ).reset_index(names="pair")
    jobs = wanted.merge(texts, on="hscode").dropna(subset=["description"])
    jobs["sim"] = _row_dots(
        vec, text.matrix, desc_row.loc[jobs["description"]].to_numpy(), jobs["text_id"].to_numpy()
    )
    pairs["hs_text_sim"] = jobs.groupby("pair")["sim"].max()
    sims, codes = text._arms_best(vec)
    arms = pd.DataFrame({"description": descs, "arms_text_sim": sims, "arms_text_heading": codes})
    pairs = pairs.merge(arms, on="description", how="left")
    return lines.merge(pairs, on=["description", "hs_code"], how="left")


def _reference_z(lines: pd.DataFrame, value: str, params: Params) -> pd.Series:
    """Robust z of each line's `value` against the same HS6 x origin (else HS6)
    over the reference window before its month: monthly cumulative sums per key,
    merge_asof at the month and at the window's start."""
    z = pd.Series(np.nan, index=lines.index)
    scored = pd.Series(False, index=lines.index)
    known = lines[value].notna()
    ref = lines.loc[known, ["hs6_origin", "hs6", "month", value]].assign(sq=lambda f: f[value] ** 2)
    window = pd.Timedelta(days=params.reference_window_days)
    for key in ("hs6_origin", "hs6"):
        monthly = (
            ref.groupby([key, "month"])
            .agg(n=(value, "size"), s1=(value, "sum"), s2=("sq", "sum"))
            .groupby(level=0)
            .cumsum()
            .reset_index()
            .rename(columns={"month": "t"})
            .sort_values("t")
        )
        queries = lines[[key, "month"]].reset_index(names="line")

        def before(
            at: pd.Series,
            key: str = key,
            monthly: pd.DataFrame = monthly,
            queries: pd.DataFrame = queries,
        ) -> pd.DataFrame:
            q = queries.assign(t=at).sort_values("t")
            m = pd.merge_asof(q, monthly, on="t", by=key, allow_exact_matches=False)
            return m.set_index("line")[["n", "s1", "s2"]].fillna(0).sort_index()

        now, start = before(queries["month"]), before(queries["month"] - window)
        r = now - start
        with np.errstate(all="ignore"):
            mean = r["s1"] / r["n"]
            var = (r["s2"] / r["n"] - mean**2).clip(lower=0.04)
            zk = ((lines[value] - mean) / np.sqrt(var)).clip(-10, 10)
        take = known & ~scored & (r["n"] >= MIN_REFERENCE)
        z[take] = zk[take]
        scored |= take
    return z.where(scored)


def pandas_goods(d: PandasInputs, params: Params) -> pd.DataFrame:
    """Family 2, the goods: per line, then per shipment."""
    s, it = d.ships, d.items
    lines = it[
        [
            "shipment_id",
            "line_no",
            "hs_code",
            "description",
            "value",
            "quantity",
            "net_mass_kg",
            "origin_country",
        ]
    ].merge(
        # (the month of each shipment, not of each of its lines, as the Polars step)
        s[["shipment_id", "declared_at"]].assign(
            fx=_fx(s, params),
            month=s["declared_at"]
            .dt.tz_convert(None)
            .dt.to_period("M")
            .dt.to_timestamp()
            .dt.tz_localize("UTC"),
        ),
        on="shipment_id",
    )
    lines["hs6"] = lines["hs_code"].str[:6]
    lines["hs6_origin"] = lines["hs6"] + "|" + lines["origin_country"]
    lines["chapter"] = lines["hs_code"].str[:2]
    with np.errstate(all="ignore"):
        lines["luv"] = np.log(lines["value"] * lines["fx"] / lines["net_mass_kg"])
        lines["lmpu"] = np.log(lines["net_mass_kg"] / lines["quantity"])
    lines["uv_z"] = _reference_z(lines, "luv", params)
    lines["mpu_z"] = _reference_z(lines, "lmpu", params).abs()
    lines["risk"] = lines["chapter"].map(CHAPTER_RISK).fillna(0.0)
    lines["ch93"] = lines["chapter"] == ARMS_CHAPTER
    lines["hiding"] = lines["hs_code"].str[:4].isin(HIDING_HEADINGS)
    descs = pd.Series(lines["description"].dropna().unique())
    terms = pd.DataFrame(
        {
            "description": descs,
            "arms_terms": descs.str.count(_ARMS),
            "part_terms": descs.str.count(_PARTS),
        }
    )
    lines = lines.merge(terms, on="description", how="left")
    lines = _text_scores(lines, nomenclature_for(params))
    lines["arms_gap"] = (lines["arms_text_sim"] - lines["hs_text_sim"]).where(~lines["ch93"])
    g = lines.groupby("shipment_id", sort=False)
    per = g.agg(
        hs_chapter_risk=("risk", "max"),
        arms_chapter_lines=("ch93", "sum"),
        hiding_heading_share=("hiding", "mean"),
        arms_terms=("arms_terms", "sum"),
        part_terms=("part_terms", "sum"),
        min_unit_value_z=("uv_z", "min"),
        max_mass_per_unit_z=("mpu_z", "max"),
        distinct_chapters=("chapter", "nunique"),
        top=("value", "max"),
        total=("value", "sum"),
        description_hs_similarity=("hs_text_sim", "min"),
        description_arms_margin=("arms_gap", "max"),
    )
    per["top_line_value_share"] = per.pop("top") / per.pop("total")
    per["description_hs_similarity"] = per["description_hs_similarity"].fillna(NO_TEXT_SIMILARITY)
    per["description_arms_margin"] = per["description_arms_margin"].fillna(NO_ARMS_MARGIN)
    return per.reindex(pd.Index(s["shipment_id"], name="shipment_id"))


def _party_keys(s: pd.DataFrame) -> pd.DataFrame:
    """`<role>_key` of each role: the identification number when given, else the
    normalised name (each distinct name normalised once, only the names of the
    parties without an identification number: the others are not read)."""
    idents = {r: s[f"{r}_id"].str.replace(ID_STRIP, "", regex=True) for r in PARTY_ROLES}
    by_id = {r: idents[r].str.len() > 0 for r in PARTY_ROLES}
    names = pd.unique(pd.concat([s[f"{r}_name"][~by_id[r]] for r in PARTY_ROLES]).dropna())
    normal = pd.Series([normalise_name(v, sort_tokens=True) for v in names], index=names)
    keys = pd.DataFrame(index=s.index)
    for r in PARTY_ROLES:
        keys[f"{r}_key"] = ("id:" + idents[r]).where(by_id[r], "name:" + s[f"{r}_name"].map(normal))
    return keys


def _cumulative(events: pd.DataFrame, key: str, time: str, sums: list[str]) -> pd.DataFrame:
    """Per key and time: the cumulative count `n` and sums of the events up to
    that time, and the key's first time `first`, sorted by time (for merge_asof)."""
    grouped = (
        events.dropna(subset=[key])
        .groupby([key, time])
        .agg(n=(time, "size"), **{c: (c, "sum") for c in sums})
        .reset_index()
    )
    grouped[["n", *sums]] = grouped.groupby(key)[["n", *sums]].cumsum()
    grouped["first"] = grouped.groupby(key)[time].transform("min")
    return grouped.rename(columns={key: "__k", time: "__t"}).sort_values("__t")


def _as_of(cum: pd.DataFrame, keys: pd.Series, at: pd.Series) -> pd.DataFrame:
    """Per query key and time (aligned with `keys`): the last row of `cum`
    (`_cumulative`) of the same key strictly before `at` (none: 0)."""
    left = pd.DataFrame({"__k": keys.array, "__t": at.array}).reset_index(names="__q")
    m = pd.merge_asof(left.sort_values("__t"), cum, on="__t", by="__k", allow_exact_matches=False)
    m = m.set_index("__q").sort_index()
    sums = [c for c in cum.columns if c not in ("__k", "__t", "first")]
    m[sums] = m[sums].fillna(0)
    return m


def _distinct_before(firsts: pd.DataFrame, key: str, keys: pd.Series, at: pd.Series) -> pd.Series:
    """Distinct values first seen with the query's key strictly before `at`
    (`firsts`: key, value, first time `t`)."""
    return _as_of(_cumulative(firsts, key, "t", []), keys, at)["n"]


def pandas_trader(d: PandasInputs, params: Params, goods_frame: pd.DataFrame) -> pd.DataFrame:
    """Family 3, trader history, for the three roles (`goods_frame`: the goods
    family's values, for the undervaluation flags)."""
    s = d.ships
    keyed = pd.concat([s[["shipment_id", "declared_at"]], _party_keys(s)], axis=1)
    keyed["undervalued"] = (
        (goods_frame["min_unit_value_z"] < -2.0).reindex(s["shipment_id"]).to_numpy().astype(int)
    )
    oc = d.outcomes.merge(
        keyed[["shipment_id", *(f"{r}_key" for r in PARTY_ROLES)]], on="shipment_id"
    )
    oc["arms"] = oc["finding_category"].isin(ARMS_CATEGORIES).astype(int)
    at = keyed["declared_at"]
    out = pd.DataFrame(index=pd.Index(s["shipment_id"], name="shipment_id"))
    for role in ("consignee", "consignor", "declarant"):
        key = f"{role}_key"
        seen = _cumulative(keyed, key, "declared_at", ["undervalued"])
        now = _as_of(seen, keyed[key], at)
        out[f"{role}_days_since_first"] = ((at - now["first"]) / pd.Timedelta(days=1)).to_numpy()
        out[f"{role}_is_new"] = (now["n"] == 0).astype(int).to_numpy()
        insp = _as_of(_cumulative(oc, key, "inspected_at", ["arms"]), keyed[key], at)
        out[f"{role}_arms_findings"] = insp["arms"].to_numpy()
        out[f"{role}_inspections"] = insp["n"].to_numpy()
        for label, width in WINDOWS.items():
            then = _as_of(seen, keyed[key], at - pd.Timedelta(width))
            out[f"{role}_shipments_{label}"] = (now["n"] - then["n"]).to_numpy()
        if role == "consignee":
            n = now["n"]
            out["consignee_undervalued_share"] = (now["undervalued"] / n).where(n > 0).to_numpy()
    # Distinct chapters the consignee declared before.
    lines = d.items[["shipment_id", "hs_code"]].merge(
        keyed[["shipment_id", "declared_at", "consignee_key"]], on="shipment_id"
    )
    lines["chapter"] = lines["hs_code"].str[:2]
    firsts = (
        lines.dropna(subset=["consignee_key", "chapter"])
        .groupby(["consignee_key", "chapter"])["declared_at"]
        .min()
        .rename("t")
        .reset_index()
    )
    out["consignee_distinct_chapters"] = _distinct_before(
        firsts, "consignee_key", keyed["consignee_key"], at
    ).to_numpy()
    # Other consignees seen before with the same phone / address.
    for contact in ("phone", "address"):
        q = pd.DataFrame(
            {
                "contact": s[f"consignee_{contact}"]
                .str.lower()
                .str.replace(r"[^\w]", "", regex=True),
                "party": keyed["consignee_key"],
                "t": at,
            }
        )
        firsts = q.dropna(subset=["contact", "party"]).groupby(["contact", "party"])["t"].min()
        firsts = firsts.rename("first").reset_index()
        parties = _distinct_before(
            firsts.rename(columns={"first": "t"}), "contact", q["contact"], at
        )
        mine = q.merge(firsts, on=["contact", "party"], how="left")["first"]
        self_seen = (mine < at).astype(int)
        out[f"consignee_{contact}_shared"] = (parties - self_seen).to_numpy()
    return out


def _families() -> dict[str, list[str]]:
    """Feature names per family, as registered."""
    names: dict[str, list[str]] = {}
    for spec in specs():
        names.setdefault(spec.family.value, []).append(spec.name)
    return names


def _cold() -> None:
    """Empty the memos of name normalisation and screening (data-dependent caches
    that an earlier run over similar names would leave warm), before each timing."""
    for module in (names_module, screening):
        for value in vars(module).values():
            clear = getattr(value, "cache_clear", None)
            if clear is not None:
                clear()


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    _cold()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _check(pol: pd.DataFrame, pdf: pd.DataFrame, columns: list[str]) -> tuple[float, bool, int]:
    """Max |diff| over the columns, whether the missing values are the same, and
    the number of values that differ (beyond 1e-6, or missing on one side only);
    prints the columns that differ."""
    worst, same, bad_total = 0.0, True, 0
    for c in columns:
        a, b = pol[c].to_numpy(float), pdf[c].to_numpy(float)
        na, nb = np.isnan(a), np.isnan(b)
        same &= bool(np.array_equal(na, nb))
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - b)
            equal = (na & nb) | (a == b) | (diff < 1e-6)
        both = ~na & ~nb & (a != b)
        if both.any():
            worst = max(worst, float(np.nanmax(diff[both])))
        bad = ~equal
        bad_total += int(bad.sum())
        if bad.any():
            print(
                f"    {c}: {int(bad.sum())} rows differ, e.g. polars {a[bad][:3]} "
                f"pandas {b[bad][:3]}"
            )
    return worst, same, bad_total


def compare(sample: History, params: Params) -> None:
    """Polars against pandas on the sample: every feature in Polars, then family by
    family the same features in pandas beside the Polars step of that family."""
    n = sample.shipments.height
    pol, t_pl = _timed(lambda: build_features(sample.shipments, sample.items, sample, params))
    print(
        f"{n:,}-shipment sample: Polars, all {len(model_columns())} features: {t_pl:.2f} s "
        f"({n / t_pl:,.0f}/s)"
    )
    d, t_in = _timed(lambda: pandas_inputs(sample))
    print(f"  pandas inputs (Polars frames converted, not counted below): {t_in:.2f} s")

    # The Polars steps of each family, whole (what `build_features` runs for them).
    keyed, t_keys = _timed(lambda: party_keys(sample.shipments))

    def with_features(prepared: pl.DataFrame, family: str) -> pl.DataFrame:
        """A family's registered features over its intermediate columns (as
        `build_features` evaluates them)."""
        exprs = [
            (s.code_expr(s.fn()) if s.kind is Kind.CATEGORICAL else s.fn())
            .cast(pl.Float64 if s.kind is Kind.NUMERIC else pl.Int32)
            .alias(s.name)
            for s in specs()
            if s.family.value == family
        ]
        return sample.shipments.hstack(prepared.drop("shipment_id").get_columns()).select(exprs)

    _, t_ship = _timed(
        lambda: with_features(
            shipment.prepare(sample.shipments, sample.items, params), "shipment_route"
        )
    )

    def polars_goods() -> pl.DataFrame:
        ref = goods.Reference.build(sample.shipments, sample.items, params)
        return goods.prepare(sample.shipments, sample.items, ref, params)

    def polars_goods_features() -> pl.DataFrame:
        prepared = polars_goods()
        with_features(prepared, "goods")
        return prepared

    goods_frame, t_goods = _timed(polars_goods_features)

    def polars_trader() -> pl.DataFrame:
        with shared_normalisation():  # (as `build_features`: contacts normalised once)
            tables = trader.Tables.build(
                trader.shipment_events(keyed, goods.undervalued_flags(goods_frame)),
                sample.items,
                trader.outcome_events(sample.outcomes, keyed),
            )
            return with_features(trader.prepare(keyed, tables), "trader_history")

    _, t_trader = _timed(polars_trader)
    t_trader += t_keys

    pd_ship, tp_ship = _timed(lambda: pandas_shipment(d, params))
    pd_goods, tp_goods = _timed(lambda: pandas_goods(d, params))
    pd_trader, tp_trader = _timed(lambda: pandas_trader(d, params, pd_goods))
    families = _families()
    pol_pd = pol.to_pandas().set_index("shipment_id")
    rows = [
        ("shipment_route", pd_ship, t_ship, tp_ship, ""),
        ("goods", pd_goods, t_goods, tp_goods, ""),
        ("trader_history", pd_trader, t_trader, tp_trader, " (with the party keys)"),
    ]
    covered, t_pl_cov, t_pd_cov = 0, 0.0, 0.0
    for family, frame, t_polars, t_pandas, note in rows:
        cols = families[family]
        missing = [c for c in cols if c not in frame.columns]
        assert not missing, missing
        worst, same, bad = _check(pol_pd.loc[frame.index], frame, cols)
        covered += len(cols)
        t_pl_cov += t_polars
        t_pd_cov += t_pandas
        print(
            f"  {family}: {len(cols)} of {len(cols)} features; Polars {t_polars:.2f} s{note}, "
            f"pandas {t_pandas:.2f} s; per-row ratio {t_pandas / t_polars:.1f}x; same values: "
            f"max |diff| {worst:.2e}, same missing: {same}, values differing: {bad}"
        )
    # The other families, Polars only (where the rest of the batch time goes).
    wl = sample.watchlist

    def polars_watchlist() -> pl.DataFrame:
        index = watchlist_family.watchlist_index(wl) if wl is not None and wl.height else None
        return watchlist_family.prepare(keyed, wl, params, index)

    def polars_travellers() -> pl.DataFrame:
        tables = travellers.Tables(keyed, sample.travellers, params)
        return travellers.prepare(keyed, tables, params, None)

    def polars_network() -> pl.DataFrame:
        return network.prepare(keyed, network.Tables(keyed, sample.outcomes), params, None)

    others = {
        "watchlist": _timed(polars_watchlist)[1],
        "traveller_linkage": _timed(polars_travellers)[1],
        "network": _timed(polars_network)[1],
    }
    print(
        "  Polars only, the other families (with their tables; on the party keys): "
        + ", ".join(f"{f} {t:.2f} s" for f, t in others.items())
    )
    left = [f for f in families if f not in {r[0] for r in rows}]
    print(
        f"  the {covered} features pandas covers ({', '.join(r[0] for r in rows)}): Polars "
        f"{t_pl_cov:.2f} s, pandas {t_pd_cov:.2f} s; per-row ratio {t_pd_cov / t_pl_cov:.1f}x; "
        f"not written in pandas: {', '.join(f'{f} ({len(families[f])})' for f in left)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shipments", type=int, default=1_000_000)
    parser.add_argument("--pandas-sample", type=int, default=100_000)
    parser.add_argument("--online", type=int, default=200, help="single-shipment calls (0: none)")
    parser.add_argument("--appends", type=int, default=5, help="single-shipment appends")
    args = parser.parse_args()
    params = Params()

    start = time.perf_counter()
    h = history_of(args.shipments, 7)
    print(
        f"world: {h.shipments.height:,} shipments, {h.items.height:,} lines, "
        f"{h.outcomes.height:,} outcomes, {h.travellers.height:,} traveller records; "
        f"{0 if h.watchlist is None else h.watchlist.height:,} watchlist entries "
        f"(built in {time.perf_counter() - start:.0f} s)"
    )
    start = time.perf_counter()
    full = build_features(h.shipments, h.items, h, params)
    took = time.perf_counter() - start
    print(
        f"batch Polars features, {full.height:,} shipments x {len(model_columns())} features: "
        f"{took:.1f} s, {full.height / took:,.0f} shipments/s"
    )

    sample = history_of(args.pandas_sample, 8)
    compare(sample, params)

    start = time.perf_counter()
    state = FeatureState.build(h, params)
    built = time.perf_counter() - start
    start = time.perf_counter()
    state.warm()
    warmed = time.perf_counter() - start
    print(
        f"feature state over {h.shipments.height:,} shipments: built in {built:.1f} s, "
        f"indexes, union-find and BFS snapshot warmed in {warmed:.1f} s"
    )
    # The service's background rebuild (late arrivals) of the same history, after the
    # state above: the name keys and the screened names are there to reuse.
    from serving.history import _built

    start = time.perf_counter()
    _built(h, private_index=True)
    print(
        f"  rebuilt and warmed again, as the service does in the background: "
        f"{time.perf_counter() - start:.1f} s"
    )

    # New shipments: copies of random history shipments (their goods lines too),
    # declared just after everything the state holds.
    rng = np.random.default_rng(0)
    picks = rng.choice(
        h.shipments.height,
        size=min(max(args.online, args.appends), h.shipments.height),
        replace=False,
    )
    assert state.as_of is not None
    at = pl.lit(state.as_of + dt.timedelta(minutes=1)).cast(h.shipments.schema["declared_at"])
    new: list[tuple[pl.DataFrame, pl.DataFrame]] = []
    for k, i in enumerate(picks):
        one = h.shipments[int(i) : int(i) + 1]
        items = h.items.filter(pl.col("shipment_id") == one["shipment_id"][0])
        sid = pl.lit(f"NEW-{k}")
        new.append(
            (
                one.with_columns(sid.alias("shipment_id"), at.alias("declared_at")),
                items.with_columns(sid.alias("shipment_id")),
            )
        )
    times = []
    for one, items in new[: args.online]:
        start = time.perf_counter()
        online_features(one, items, state)
        times.append(time.perf_counter() - start)
    if times:  # (`--online 0`: none asked)
        times_ms = np.array(times) * 1000
        print(
            f"online features for one new shipment against {h.shipments.height:,} shipments of "
            f"history (feature state): p50 {np.percentile(times_ms, 50):.1f} ms, "
            f"p99 {np.percentile(times_ms, 99):.1f} ms, max {times_ms.max():.1f} ms "
            f"({len(times)} calls)"
        )
    appends = []
    for one, items in new[: args.appends]:
        start = time.perf_counter()
        state.append(one, items)
        appends.append(time.perf_counter() - start)
    if appends:
        ms = np.array(appends) * 1000
        print(
            f"append one shipment to the state: p50 {np.percentile(ms, 50):.0f} ms, "
            f"max {ms.max():.0f} ms ({len(appends)} appends)"
        )


if __name__ == "__main__":
    main()
