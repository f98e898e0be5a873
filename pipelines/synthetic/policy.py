"""The historical inspection policy that produced the outcomes (the labels).

Rules (probability of selection when the rule hits):
- R-CH93-MUST (1.0): a line declared in chapter 93 (arms and ammunition);
- R-HIGH-RISK-ROUTE (0.3): origin, dispatch or transit in AF, PK, IR, SY, IQ
  (a long-standing, widely known profile: a share of the trafficking networks
  keeps these countries out of their declared routes, see `typologies`);
- R-LOW-VALUE-KG (0.3): a line of chapters 84, 85, 87, 90, 93 or 95 valued under
  30 % of the code's usual USD per kg;
- R-AFG-BORDER (0.15): declared at an office on the Afghan border;
- R-POST-PARTS (0.05): post or express with chapter 84 or 87 lines.
The strongest rule that hits is recorded. Independently, every shipment is
drawn at random with `random_share`; P(select) = 1-(1-p_rule)(1-p_random) is the
recorded selection probability, and the method is the reason that fired (rule
before random). A few shipments come from intelligence (probability 1).
Inspections are imperfect: trafficking is found with a typology-dependent
probability; lawful shipments sometimes yield documentary or other findings."""

from __future__ import annotations

import numpy as np
import polars as pl

from data_contracts.schemas import OUTCOMES
from pipelines.synthetic import catalog as cat
from pipelines.synthetic.timeline import US_PER_HOUR, ser
from pipelines.synthetic.typologies import DETECTION, FINDING

RULES: tuple[tuple[str, float], ...] = (
    ("R-CH93-MUST", 1.0),
    ("R-HIGH-RISK-ROUTE", 0.3),
    ("R-LOW-VALUE-KG", 0.3),
    ("R-AFG-BORDER", 0.15),
    ("R-POST-PARTS", 0.05),
)
UTC = pl.Datetime("us", "UTC")


def rule_hits(shipments: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """shipment_id, p_rule, rule for every shipment (rule null when none hits)."""
    rates = pl.DataFrame(
        {"invoice_currency": list(cat.USD_RATE), "_rate": list(cat.USD_RATE.values())}
    )
    norm = pl.DataFrame(
        {"_hs6": [g.hs6 for g in cat.GOODS], "_norm": [g.usd_per_kg for g in cat.GOODS]}
    )
    risky = list(cat.HIGH_RISK_COUNTRIES)
    it = (
        items.select("shipment_id", "hs_code", "value", "net_mass_kg")
        .join(shipments.select("shipment_id", "invoice_currency", "mode"), on="shipment_id")
        .join(rates, on="invoice_currency", how="left")
        .with_columns(
            pl.col("hs_code").str.slice(0, 6).alias("_hs6"),
            pl.col("hs_code").str.slice(0, 2).alias("_ch"),
        )
        .join(norm, on="_hs6", how="left")
        .with_columns((pl.col("value") / pl.col("_rate") / pl.col("net_mass_kg")).alias("_ukg"))
        .group_by("shipment_id")
        .agg(
            (pl.col("_ch") == "93").any().alias("ch93"),
            (
                (pl.col("_ukg") < 0.3 * pl.col("_norm"))
                & pl.col("_ch").is_in(["84", "85", "87", "90", "93", "95"])
            )
            .any()
            .alias("lowv"),
            (pl.col("_ch").is_in(["84", "87"]) & pl.col("mode").is_in(["post", "express"]))
            .any()
            .alias("postparts"),
        )
    )
    s = shipments.select(
        "shipment_id",
        (
            pl.col("origin_country").is_in(risky)
            | pl.col("dispatch_country").is_in(risky)
            | pl.col("transit_countries")
            .list.eval(pl.element().is_in(risky))
            .list.any()
            .fill_null(False)
        ).alias("route"),
        pl.col("office_code").is_in(list(cat.AFGHAN_BORDER_OFFICES)).alias("afg"),
    ).join(it, on="shipment_id", how="left", maintain_order="left")
    flags = ["ch93", "route", "lowv", "afg", "postparts"]
    expr_p: pl.Expr = pl.lit(0.0)
    expr_r: pl.Expr = pl.lit(None, dtype=pl.String)
    for (name, p), flag in reversed(list(zip(RULES, flags, strict=True))):
        expr_p = pl.when(pl.col(flag).fill_null(False)).then(pl.lit(p)).otherwise(expr_p)
        expr_r = pl.when(pl.col(flag).fill_null(False)).then(pl.lit(name)).otherwise(expr_r)
    return s.select("shipment_id", expr_p.alias("p_rule"), expr_r.alias("rule"))


def inspect(
    rng: np.random.Generator,
    shipments: pl.DataFrame,
    items: pl.DataFrame,
    truth: pl.DataFrame,
    random_share: float,
    intelligence_share: float,
) -> pl.DataFrame:
    """Outcomes of the shipments the policy selected, sorted by inspected_at."""
    hits = rule_hits(shipments, items)
    n = shipments.height
    typ = truth["typology"].to_numpy()
    traffic = truth["is_trafficking"].to_numpy()
    p_rule = hits["p_rule"].to_numpy()
    rule_fire = rng.random(n) < p_rule
    rand_fire = rng.random(n) < random_share
    intel = rng.random(n) < np.where(traffic, intelligence_share, intelligence_share * 0.004)
    selected = rule_fire | rand_fire | intel
    method = np.where(intel, "intelligence", np.where(rule_fire, "rule", "random"))
    prob = np.where(intel, 1.0, 1.0 - (1.0 - p_rule) * (1.0 - random_share))
    rule = np.where(method == "rule", hits["rule"].to_numpy(), None)  # type: ignore[call-overload]
    idx = np.flatnonzero(selected)
    m = len(idx)
    s_typ = typ[idx]
    found = np.zeros(m, dtype=bool)
    category = np.full(m, None, dtype=object)
    qty = np.full(m, np.nan)
    unit = np.full(m, None, dtype=object)
    u = rng.random(m)
    for t, p_detect in DETECTION.items():
        tm = s_typ == t
        hit = tm & (u < p_detect)
        cats, ps = FINDING[t]
        category[hit] = np.array(cats, dtype=object)[
            rng.choice(len(cats), int(hit.sum()), p=np.array(ps))
        ]
        found |= hit
    lawful = ~found
    v = rng.random(m)
    doc = lawful & (v < 0.03)
    other = lawful & (v >= 0.03) & (v < 0.04)
    category[doc] = "documentary"
    category[other] = "other_contraband"
    finding = np.array([c is not None for c in category], dtype=bool)
    for c, lo, hi, un in (
        ("firearms", 1, 20, "PCE"),
        ("parts", 5, 300, "PCE"),
        ("ammunition", 200, 5000, "PCE"),
        ("dual_use", 5, 60, "PCE"),
        ("other_contraband", 1, 50, "KGM"),
    ):
        cm = category == c
        qty[cm] = rng.integers(lo, hi + 1, int(cm.sum()))
        unit[cm] = un
    decl = shipments["declared_at"].to_numpy().astype("datetime64[us]").astype(np.int64)[idx]
    arr = shipments["expected_arrival_at"].to_numpy().astype("datetime64[us]").astype(np.int64)[idx]
    when = np.maximum(decl, arr) + (np.exp(rng.normal(np.log(4.0), 1.0, m)) * US_PER_HOUR).astype(
        np.int64
    )
    office = shipments["office_code"].to_numpy()[idx]
    officer = np.char.add(
        np.char.add(office.astype(str), "-O"), np.char.zfill(rng.integers(1, 26, m).astype(str), 3)
    )
    notes = np.where(finding, np.char.add("Found: ", category.astype(str)), "No irregularities")
    notes = np.where(rng.random(m) < 0.3, None, notes)  # type: ignore[call-overload]
    frame = pl.DataFrame(
        {
            "shipment_id": shipments["shipment_id"].gather(idx),
            "inspected_at": ser(when).cast(UTC),
            "officer_id": ser(officer),
            "selection_method": ser(method[idx]),
            "selection_rule": ser(rule[idx], dtype=pl.String),
            "selection_probability": ser(prob[idx], dtype=pl.Float64),
            "finding": ser(finding.astype(bool)),
            "finding_category": ser(category, dtype=pl.String),
            "quantity_seized": ser(qty).fill_nan(None),
            "seized_unit": ser(unit, dtype=pl.String),
            "notes": ser(notes, dtype=pl.String),
            "_order": np.arange(m),
        }
    )
    frame = frame.sort("inspected_at", "_order").with_columns(
        pl.format("IN{}", pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(10)).alias(
            "outcome_id"
        )
    )
    return frame.select([pl.col(c).cast(t) for c, t in OUTCOMES.raw_schema.items()])
