"""Feature speed: batch Polars features against the same features written in pandas,
and the online call for one new shipment against the whole history.

    .venv/bin/python benchmarks/bench_features.py --shipments 1000000 --pandas-sample 100000 \
        --online 200

Prints, from one run on this machine:
* batch features for all shipments (Polars, `features.build.build_features`);
* the same pipeline on a sample, beside a pandas implementation of a subset of the
  same features (consignee history, goods value z-scores, route and totals) written
  as a good pandas user would (vectorised groupby, merge_asof, rolling windows; no
  loops over rows), with a check that both give the same values; the ratio is per
  row, conservative: Polars computes every feature, pandas only the subset; and
  the ratio against the Polars families that subset comes from (shipment, goods,
  trader: still every feature of theirs);
* every party screened against the UN Security Council list (read from the shared
  reference data beside the checkout, when present) and the example national list;
* the feature state over the full history (`features.state.FeatureState`): build
  and warm-up time;
* online features for single new shipments (copies of history shipments declared
  just after it) against that state (p50, p99), and appending one shipment.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from data_contracts.loaders.national import load_national_csv
from data_contracts.loaders.un_sc import load_un_consolidated
from data_contracts.readers import from_frame
from data_contracts.schemas import CONTRACTS
from data_contracts.validate import validate_tables
from features import goods, shipment, trader
from features.build import build_features, model_columns, online_features
from features.context import History, Params, party_keys
from features.names import normalise_name
from features.state import FeatureState
from pipelines.synthetic import WorldConfig, generate_world

ARMS = ["firearms", "parts", "ammunition", "explosives"]
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


def pandas_features(h: History, params: Params) -> pd.DataFrame:
    """A subset of the features, the pandas way."""
    s = h.shipments.select(
        "shipment_id",
        "declared_at",
        "expected_arrival_at",
        "consignee_id",
        "consignee_name",
        "invoice_amount",
        "invoice_currency",
        pl.col("transit_countries").list.len().alias("transit_count"),
    ).to_pandas()
    it = h.items.select(
        "shipment_id", "hs_code", "value", "net_mass_kg", "origin_country"
    ).to_pandas()
    oc = h.outcomes.select(
        "shipment_id", "inspected_at", "finding", pl.col("finding_category").cast(pl.String)
    ).to_pandas()
    fx = s["invoice_currency"].map(params.usd_per_unit)
    ident = s["consignee_id"].str.replace(r"[\s./-]", "", regex=True)
    names = s["consignee_name"].drop_duplicates()
    keys = dict(zip(names, names.map(lambda v: normalise_name(v, sort_tokens=True)), strict=True))
    s["consignee_key"] = ("id:" + ident).where(
        ident.str.len() > 0, "name:" + s["consignee_name"].map(keys)
    )
    out = pd.DataFrame({"shipment_id": s["shipment_id"]})
    out["transit_count"] = s["transit_count"].fillna(0).astype(float)
    out["lead_time_hours"] = (s["expected_arrival_at"] - s["declared_at"]).dt.total_seconds() / 3600
    out["log_value_usd"] = np.log10(s["invoice_amount"] * fx)
    out["item_count"] = s["shipment_id"].map(it.groupby("shipment_id").size()).fillna(0)

    # Consignee history: counts strictly before each declaration, in trailing windows.
    ev = s[["consignee_key", "declared_at", "shipment_id"]].sort_values("declared_at")
    per_time = ev.groupby(["consignee_key", "declared_at"]).size().rename("n").reset_index()
    per_time = per_time.sort_values(["consignee_key", "declared_at"])
    per_time["cum"] = per_time.groupby("consignee_key")["n"].cumsum()
    per_time["first"] = per_time.groupby("consignee_key")["declared_at"].transform("min")
    q = s[["shipment_id", "consignee_key", "declared_at"]].sort_values("declared_at")

    def cum_before(at: pd.Series) -> pd.DataFrame:
        left = q.assign(t=at.loc[q.index]).sort_values("t")
        right = per_time.rename(columns={"declared_at": "t"}).sort_values("t")
        m = pd.merge_asof(
            left,
            right[["consignee_key", "t", "cum", "first"]],
            on="t",
            by="consignee_key",
            allow_exact_matches=False,
        )
        return m.set_index("shipment_id")

    now = cum_before(s["declared_at"])
    out = out.set_index("shipment_id")
    out["consignee_is_new"] = now["cum"].isna().astype(int)
    out["consignee_days_since_first"] = (
        s.set_index("shipment_id")["declared_at"] - now["first"]
    ).dt.total_seconds() / 86400
    for label, width in WINDOWS.items():
        before = cum_before(s["declared_at"] - pd.Timedelta(width))
        out[f"consignee_shipments_{label}"] = (
            now["cum"].fillna(0) - before["cum"].fillna(0)
        ).astype(float)

    # Inspections and arms findings known (inspected_at) before the declaration.
    oc = oc.merge(s[["shipment_id", "consignee_key"]], on="shipment_id")
    oc["arms"] = (oc["finding"] & oc["finding_category"].isin(ARMS)).astype(int)
    g = (
        oc.groupby(["consignee_key", "inspected_at"])
        .agg(n=("arms", "size"), a=("arms", "sum"))
        .reset_index()
    )
    g = g.sort_values(["consignee_key", "inspected_at"])
    g["n"] = g.groupby("consignee_key")["n"].cumsum()
    g["a"] = g.groupby("consignee_key")["a"].cumsum()
    m = pd.merge_asof(
        q.rename(columns={"declared_at": "t"}),
        g.rename(columns={"inspected_at": "t"}).sort_values("t"),
        on="t",
        by="consignee_key",
        allow_exact_matches=False,
    ).set_index("shipment_id")
    out["consignee_inspections"] = m["n"].fillna(0).astype(float)
    out["consignee_arms_findings"] = m["a"].fillna(0).astype(float)

    # Unit value z against the same HS6 x origin (else HS6) over the 12 months before.
    lines = it.merge(s[["shipment_id", "declared_at"]].assign(fx=fx), on="shipment_id")
    lines["luv"] = np.log(lines["value"] * lines["fx"] / lines["net_mass_kg"])
    lines["luv2"] = lines["luv"] ** 2
    lines["month"] = lines["declared_at"].dt.tz_convert(None).dt.to_period("M").dt.to_timestamp()
    lines["hs6"] = lines["hs_code"].str[:6]
    lines["hs6_origin"] = lines["hs6"] + "|" + lines["origin_country"]
    z = pd.Series(np.nan, index=lines.index)
    window = pd.Timedelta(days=params.reference_window_days)
    for key in ("hs6_origin", "hs6"):
        monthly = (
            lines.groupby([key, "month"])
            .agg(n=("luv", "count"), s1=("luv", "sum"), s2=("luv2", "sum"))
            .groupby(level=0)
            .cumsum()
            .reset_index()
            .sort_values("month")
        )
        queries = lines[[key, "month"]].reset_index().sort_values("month")

        def monthly_before(
            at: pd.Series,
            key: str = key,
            monthly: pd.DataFrame = monthly,
            queries: pd.DataFrame = queries,
        ) -> pd.DataFrame:
            q = queries.assign(t=at).sort_values("t")
            m = pd.merge_asof(
                q, monthly.rename(columns={"month": "t"}), on="t", by=key, allow_exact_matches=False
            )
            return m.set_index("index")[["n", "s1", "s2"]].fillna(0).sort_index()

        now, start = monthly_before(queries["month"]), monthly_before(queries["month"] - window)
        ref = now - start
        mean = ref["s1"] / ref["n"]
        var = (ref["s2"] / ref["n"] - mean**2).clip(lower=0.04)
        zk = ((lines["luv"] - mean) / np.sqrt(var)).clip(-10, 10).where(ref["n"] >= 5)
        z = z.fillna(zk)
    lines["z"] = z
    out["min_unit_value_z"] = lines.groupby("shipment_id")["z"].min()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shipments", type=int, default=1_000_000)
    parser.add_argument("--pandas-sample", type=int, default=100_000)
    parser.add_argument("--online", type=int, default=200, help="single-shipment calls")
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
    start = time.perf_counter()
    pol = build_features(sample.shipments, sample.items, sample, params)
    t_pl = time.perf_counter() - start
    start = time.perf_counter()
    pdf = pandas_features(sample, params)
    t_pd = time.perf_counter() - start
    # The Polars families the pandas subset comes from (shipment, goods, trader),
    # computed whole (every role, every goods feature): the same step, engine
    # against engine, without the families pandas does not compute at all.
    start = time.perf_counter()
    keyed = party_keys(sample.shipments)
    ref = goods.Reference.build(sample.shipments, sample.items, params)
    goods_frame = goods.prepare(sample.shipments, sample.items, ref, params)
    tables = trader.Tables.build(
        trader.shipment_events(keyed, goods.undervalued_flags(goods_frame)),
        sample.items,
        trader.outcome_events(sample.outcomes, keyed),
    )
    shipment.prepare(sample.shipments, sample.items, params)
    trader.prepare(keyed, tables)
    t_same = time.perf_counter() - start
    cols = [c for c in pdf.columns if c in pol.columns]
    joined = pol.select("shipment_id", *cols).to_pandas().set_index("shipment_id")
    joined = joined.loc[pdf.index]
    worst = max(
        float(np.nanmax(np.abs(joined[c].to_numpy(float) - pdf[c].to_numpy(float))))
        if len(pdf)
        else 0.0
        for c in cols
    )
    for c in cols:
        a, b = joined[c].to_numpy(float), pdf[c].to_numpy(float)
        bad = ~((np.isnan(a) & np.isnan(b)) | (np.abs(a - b) < 1e-6))
        if bad.any():
            print(
                f"  {c}: {int(bad.sum())} rows differ, e.g. polars {a[bad][:3]} pandas {b[bad][:3]}"
            )
    same = all(
        np.array_equal(np.isnan(joined[c].to_numpy(float)), np.isnan(pdf[c].to_numpy(float)))
        for c in cols
    )
    print(
        f"{sample.shipments.height:,}-shipment sample: Polars all {len(model_columns())} features "
        f"{t_pl:.2f} s ({sample.shipments.height / t_pl:,.0f}/s); pandas {len(cols)} of them "
        f"{t_pd:.2f} s ({sample.shipments.height / t_pd:,.0f}/s); per-row ratio "
        f"{t_pd / t_pl:.1f}x; same values: max |diff| {worst:.2e}, same missing: {same}"
    )
    print(
        f"  the shipment, goods and trader families alone (all their features, where the "
        f"pandas subset comes from): Polars {t_same:.2f} s; per-row ratio {t_pd / t_same:.1f}x"
    )

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

    # New shipments: copies of random history shipments (their goods lines too),
    # declared just after everything the state holds.
    rng = np.random.default_rng(0)
    picks = rng.choice(h.shipments.height, size=min(args.online, h.shipments.height), replace=False)
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
    for one, items in new:
        start = time.perf_counter()
        online_features(one, items, state)
        times.append(time.perf_counter() - start)
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
