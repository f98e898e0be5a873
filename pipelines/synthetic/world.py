"""The synthetic Central Asian trade world: configuration and the one entry point."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipelines.synthetic import catalog as cat
from pipelines.synthetic.breakage import break_world
from pipelines.synthetic.lawful import Plan, ecommerce_plan, make_traders, trader_plan
from pipelines.synthetic.parties import PartyBook
from pipelines.synthetic.policy import inspect
from pipelines.synthetic.render import render_items, render_shipments, role_columns
from pipelines.synthetic.timeline import day_weights, ser
from pipelines.synthetic.travellers import generate_travellers
from pipelines.synthetic.typologies import DEFAULT_TYPOLOGY_RATES, TYPOLOGIES, Ctx, plant

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class WorldConfig:
    """What world to generate.

    `typology_rates` are shares of all shipments per typology; typologies left out
    keep their default rate (set 0.0 to switch one off). `broken_share` is the
    share of all raw rows (all four tables) deliberately broken. Lawful trader
    shipments come from established traders (`shipments_per_consignee` on
    average) and, for `occasional_share` of them, from a long tail of occasional
    importers with `occasional_shipments` declarations on average."""

    n_shipments: int = 20_000
    seed: int = 7
    start: dt.date = dt.date(2024, 1, 1)
    days: int = 730
    broken_share: float = 0.005
    typology_rates: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_TYPOLOGY_RATES), hash=False
    )
    random_inspection_share: float = 0.02
    intelligence_share: float = 0.04  # share of trafficking shipments flagged by a tip
    travellers_per_shipment: float = 1.2
    ecommerce_share: float = 0.12  # lawful B2C parcels among lawful shipments
    shipments_per_consignee: float = 60.0  # established traders
    occasional_share: float = 0.25  # lawful trader shipments by occasional importers
    occasional_shipments: float = 4.0  # mean declarations per occasional importer
    # Share of trafficking networks that keep the historical high-risk countries
    # (catalog.HIGH_RISK_COUNTRIES, the list of rule R-HIGH-RISK-ROUTE) out of
    # their declared origin, dispatch and transit, going through hubs that lawful
    # trade uses instead (route displacement; see typologies). An assumption of the
    # world, not a measured figure: the profile is old and known to every
    # forwarder in the region and rerouting through Dubai, Istanbul or Baku is
    # cheap, so many networks adapt; but networks whose goods or couriers
    # physically come from there and opportunistic ones that do not know the
    # profile do not. With nothing to weigh one side against the other: half.
    displacement_share: float = 0.5

    def rates(self) -> dict[str, float]:
        """Rate per typology, defaults filled in."""
        return {t: float(self.typology_rates.get(t, DEFAULT_TYPOLOGY_RATES[t])) for t in TYPOLOGIES}

    def __post_init__(self) -> None:
        unknown = set(self.typology_rates) - set(TYPOLOGIES)
        if unknown:
            raise ValueError(f"unknown typologies: {sorted(unknown)}")
        if any(not 0 <= r < 0.2 for r in self.typology_rates.values()):
            raise ValueError("typology rates must be in [0, 0.2)")
        if self.n_shipments < 100:
            raise ValueError("n_shipments must be at least 100")
        if not 0 <= self.broken_share < 0.2:
            raise ValueError("broken_share must be in [0, 0.2)")
        if not 0 < self.random_inspection_share < 1:
            raise ValueError("random_inspection_share must be in (0, 1)")
        if not 0 <= self.occasional_share < 1 or self.occasional_shipments < 1:
            raise ValueError("occasional_share must be in [0, 1), occasional_shipments >= 1")
        if not 0 <= self.displacement_share <= 1:
            raise ValueError("displacement_share must be in [0, 1]")


@dataclass
class World:
    """A generated world.

    Raw tables (exact contract columns, enums as strings; deliberately broken rows
    included): `shipments` sorted by declared_at, `items` grouped by shipment in
    shipment order, `travellers` by departure_at, `outcomes` by inspected_at.

    Truth (never in raw):
    - `truth`: shipment_id, is_trafficking, typology, network_id, route_displaced
      (the network keeps the listed high-risk countries out of its declared
      route; null for lawful shipments) (one row per id);
    - `parties`: shipment_id, role (consignor/consignee/declarant), party_key of
      the real party behind the declared name;
    - `traveller_links`: traveller_record_id, party_key, link_kind (same_person,
      phone, address, name_variant) for travellers who are or are linked to a party;
    - `broken`: table, row_index (0-based in that raw table), record_id, rule.
    """

    shipments: pl.DataFrame
    items: pl.DataFrame
    travellers: pl.DataFrame
    outcomes: pl.DataFrame
    truth: pl.DataFrame
    traveller_links: pl.DataFrame
    parties: pl.DataFrame
    broken: pl.DataFrame


def _concat_plans(plans: list[Plan]) -> Plan:
    ships, items, offset = [], [], 0
    for p in plans:
        ships.append(p.shipments)
        items.append(p.items.with_columns(pl.col("ship") + offset))
        offset += p.shipments.height
    return Plan(pl.concat(ships), pl.concat(items))


def generate_world(config: WorldConfig, progress: Progress | None = None) -> World:
    """Generate the whole world from `config` (pure: no I/O; deterministic per seed)."""

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    rng = np.random.Generator(np.random.PCG64(config.seed))
    n = config.n_shipments
    day_w = day_weights(config.start, config.days)
    start_us = int(
        dt.datetime.combine(config.start, dt.time(), tzinfo=dt.UTC).timestamp() * 1_000_000
    )
    counts = {t: int(rng.binomial(n, r)) for t, r in config.rates().items()}
    n_lawful = n - sum(counts.values())
    n_ec = round(n_lawful * config.ecommerce_share)
    report("traders", 0.0)
    book = PartyBook(rng)
    n_traders = max(30, round(n / config.shipments_per_consignee))
    n_occ = round(config.occasional_share * (n_lawful - n_ec) / config.occasional_shipments)
    traders, _cnor, brokers = make_traders(
        rng,
        book,
        n_traders,
        max(2, n // 10_000),
        config.days,
        n_occasional=max(n_occ, 1),
        occasional_share=config.occasional_share,
    )
    report("lawful trade", 0.1)
    plans = [
        trader_plan(
            rng,
            traders,
            brokers,
            n_lawful - n_ec,
            start_us,
            day_w,
            book.frame()["country"].to_numpy(),
        ),
        ecommerce_plan(rng, book, brokers, n_ec, start_us, day_w),
    ]
    report("trafficking networks", 0.3)
    ctx = Ctx(
        rng,
        book,
        traders,
        brokers,
        start_us,
        config.days,
        day_w,
        displacement_share=config.displacement_share,
        # the networks' displacement trait on a stream of its own (see Ctx)
        trait_rng=np.random.Generator(np.random.PCG64([config.seed, 1])),
    )
    planted = plant(ctx, counts)
    if planted is not None:
        plans.append(planted)
    plan = _concat_plans(plans)
    report("shipments", 0.4)
    ships, items = _totals(rng, plan)
    ships = ships.with_row_index("_sid").sort("ts", "_sid")
    ships = ships.with_columns(
        pl.format("SH{}", pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(10)).alias(
            "shipment_id"
        ),
        pl.int_range(pl.len()).alias("_rank"),
    )
    ranks = ships.select("_sid", "_rank", "shipment_id")
    items = (
        items.with_row_index("_line")
        .join(ranks, left_on="ship", right_on="_sid")
        .sort("_rank", "_line")
        .with_columns(pl.int_range(1, pl.len() + 1).over("_rank").alias("line_no"))
    )
    raw_ships, parties_truth = render_shipments(rng, ships, book)
    raw_items = render_items(items)
    truth = ships.select(
        "shipment_id",
        pl.col("typology").is_not_null().alias("is_trafficking"),
        "typology",
        pl.col("network").alias("network_id"),
        pl.when(pl.col("typology").is_not_null())
        .then(pl.col("displaced"))
        .alias("route_displaced"),
    )
    report("travellers", 0.6)
    travellers, links = generate_travellers(
        rng,
        round(n * config.travellers_per_shipment),
        book,
        traders,
        ctx.trips,
        start_us,
        day_w,
    )
    report("inspections", 0.8)
    outcomes = inspect(
        rng,
        raw_ships,
        raw_items,
        truth,
        config.random_inspection_share,
        config.intelligence_share,
    )
    raw_ships, parties_truth = _burn(rng, ships, raw_ships, parties_truth, outcomes, book)
    report("breakage", 0.9)
    tables, broken = break_world(
        rng,
        {
            "shipments": raw_ships,
            "items": raw_items,
            "travellers": travellers,
            "outcomes": outcomes,
        },
        truth.filter("is_trafficking")["shipment_id"],
        links["traveller_record_id"],
        config.broken_share,
    )
    report("done", 1.0)
    return World(
        shipments=tables["shipments"],
        items=tables["items"],
        travellers=tables["travellers"],
        outcomes=tables["outcomes"],
        truth=truth,
        traveller_links=links,
        parties=parties_truth,
        broken=broken,
    )


ARMS_FINDINGS = ("firearms", "parts", "ammunition", "dual_use")


def _burn(
    rng: np.random.Generator,
    ships: pl.DataFrame,
    raw: pl.DataFrame,
    parties: pl.DataFrame,
    outcomes: pl.DataFrame,
    book: PartyBook,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each seizure burns a network's front: its later shipments come under a new
    consignee and consignor (couriers keep theirs: their journeys are tied to
    them; postal consignees are one-off persons anyway)."""
    seized = (
        outcomes.filter(pl.col("finding_category").is_in(ARMS_FINDINGS))
        .join(ships.select("shipment_id", "network"), on="shipment_id")
        .drop_nulls("network")
        .select("network", pl.col("inspected_at").dt.epoch("us").alias("_seized"))
    )
    if seized.is_empty():
        return raw, parties
    rows = (
        ships.select("network", "typology", "ts", "consignee", "consignor")
        .with_row_index("_row")
        .filter(pl.col("typology") != "courier_traveller")
        .join(seized, on="network")
        .group_by("_row", "network", "typology", "consignee", "consignor")
        .agg((pl.col("_seized") < pl.col("ts")).sum().alias("_burnt"))
        .filter(pl.col("_burnt") > 0)
        .sort("_row")
        .with_columns(pl.format("{}#{}", "network", "_burnt").alias("_front"))
    )
    if rows.is_empty():
        return raw, parties
    country = book.frame()["country"].to_numpy()
    fronts = rows["_front"].unique(maintain_order=True)
    first = rows.unique("_front", keep="first", maintain_order=True)
    new: dict[str, np.ndarray] = {}
    for role in ("consignee", "consignor"):
        idx = book.add(country[first[role].to_numpy()].astype(object), "company")
        new[role] = idx
    frame, names = book.frame(), book.name_table()
    pos = {str(k): i for i, k in enumerate(fronts)}
    net_pos = np.array([pos[str(k)] for k in rows["_front"]])
    r = rows["_row"].to_numpy()
    postal = (rows["typology"] == "postal_split").to_numpy()
    ids = raw["shipment_id"].gather(r)
    for role in ("consignee", "consignor"):
        sel = ~postal if role == "consignee" else np.ones(len(r), dtype=bool)
        if not sel.any():
            continue
        idx = new[role][net_pos[sel]]
        cols = role_columns(rng, frame, names, idx, role)
        raw = raw.with_columns(
            raw[c].scatter(r[sel], v.cast(raw[c].dtype)) for c, v in cols.items()
        )
        patch = pl.DataFrame(
            {
                "shipment_id": ids.filter(pl.Series(sel)),
                "role": np.full(int(sel.sum()), role),
                "_new": frame["party_key"].gather(idx),
            }
        )
        parties = (
            parties.join(patch, on=["shipment_id", "role"], how="left", maintain_order="left")
            .with_columns(pl.coalesce("_new", "party_key").alias("party_key"))
            .drop("_new")
        )
    return raw, parties


def _totals(rng: np.random.Generator, plan: Plan) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Line values in the invoice currency, shipment totals, gross mass, packages."""
    rates = pl.DataFrame({"currency": list(cat.USD_RATE), "_rate": list(cat.USD_RATE.values())})
    ships = plan.shipments.with_row_index("_sid").join(rates, on="currency", how="left")
    ships = ships.sort("_sid")
    items = plan.items.join(
        ships.select("_sid", "_rate"), left_on="ship", right_on="_sid", maintain_order="left"
    )
    items = items.with_columns(
        (pl.col("value_usd") * pl.col("_rate")).round(2).clip(lower_bound=0.01).alias("value")
    )
    sums = items.group_by("ship").agg(
        pl.col("value").sum().alias("invoice"), pl.col("net_mass_kg").sum().alias("net")
    )
    ships = ships.join(sums, left_on="_sid", right_on="ship", how="left", maintain_order="left")
    k = ships.height
    factor = rng.uniform(1.02, 1.25, k)
    small = ships["mode"].is_in(["post", "express"]).to_numpy()
    gross = np.round(ships["net"].to_numpy() * factor + np.where(small, 0.1, 2.0), 2)
    packages = np.where(
        small,
        rng.integers(1, 3, k),
        np.maximum(1, np.round(gross / rng.uniform(8, 60, k))).astype(np.int64),
    )
    ships = ships.with_columns(
        ser("gross", gross),
        ser("packages", packages.astype(np.int64)),
        pl.col("invoice").round(2),
    ).drop("_sid", "_rate", "net")
    return ships, items.drop("_rate")
