"""Route displacement in the synthetic world: a share of the trafficking networks
(a trait drawn once per network) keeps the countries of the historical rule
R-HIGH-RISK-ROUTE out of its declared origin, dispatch and transit."""

from __future__ import annotations

import math

import polars as pl
import pytest

from pipelines.synthetic import World, WorldConfig, generate_world
from pipelines.synthetic import catalog as cat

LISTED = list(cat.HIGH_RISK_COUNTRIES)
# many networks in a small world: every typology at 0.4 % (about 8 x 60 shipments);
# seed 4 has displaced networks that would, without the trait, have picked a
# lawful front trading with a listed country
RATES = {t: 0.004 for t in WorldConfig().rates()}


def _world(share: float) -> World:
    return generate_world(
        WorldConfig(n_shipments=15_000, seed=4, typology_rates=RATES, displacement_share=share)
    )


@pytest.fixture(scope="module")
def world() -> World:
    return _world(WorldConfig().displacement_share)


@pytest.fixture(scope="module")
def undisplaced() -> World:
    return _world(0.0)


def _routes(world: World) -> pl.DataFrame:
    """One row per unbroken shipment: its truth and whether its declared origin,
    dispatch or transit names a listed country (the rule's own test)."""
    broken = world.broken.filter(pl.col("table") == "shipments")["row_index"].implode()
    ships = world.shipments.with_row_index("_row").filter(~pl.col("_row").is_in(broken))
    return ships.join(world.truth, on="shipment_id").with_columns(
        (
            pl.col("origin_country").is_in(LISTED)
            | pl.col("dispatch_country").is_in(LISTED)
            | pl.col("transit_countries").list.eval(pl.element().is_in(LISTED)).list.any()
        )
        .fill_null(False)
        .alias("listed")
    )


def test_the_trait_is_drawn_once_per_network_at_the_configured_share(world: World) -> None:
    nets = (
        world.truth.filter("is_trafficking")
        .group_by("network_id")
        .agg(
            pl.col("route_displaced").n_unique().alias("values"), pl.col("route_displaced").first()
        )
    )
    assert (nets["values"] == 1).all()  # one value for all of a network's shipments
    assert world.truth.filter(~pl.col("is_trafficking"))["route_displaced"].null_count() == (
        world.truth.filter(~pl.col("is_trafficking")).height
    )
    n, p = nets.height, WorldConfig().displacement_share
    k = int(nets["route_displaced"].sum())
    assert n >= 40
    assert abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1, (k, n)


def test_displaced_networks_never_declare_a_listed_country(world: World) -> None:
    s = _routes(world)
    displaced = s.filter(pl.col("route_displaced"))
    assert displaced.height > 100
    assert not displaced["listed"].any()
    # their suppliers are in the hubs too (an abused lawful front is one whose
    # usual trade does not touch the listed countries)
    assert not displaced["consignor_country"].is_in(LISTED).any()
    # nor in the goods lines' origin
    items = world.items.join(displaced.select("shipment_id"), on="shipment_id")
    assert not items["origin_country"].is_in(LISTED).any()
    # the other networks keep their routes: many of their shipments hit the rule
    kept = s.filter(pl.col("is_trafficking") & ~pl.col("route_displaced"))
    assert kept["listed"].mean() > 0.15  # type: ignore[operator]


def test_lawful_trade_keeps_the_listed_routes_and_uses_the_hubs(
    world: World, undisplaced: World
) -> None:
    s, s0 = _routes(world), _routes(undisplaced)
    lawful = s.filter(~pl.col("is_trafficking"))
    lawful0 = s0.filter(~pl.col("is_trafficking"))
    # lawful shipments hit the route rule exactly as in the same world without
    # displacement (the trait changes the networks only; rows broken in either
    # world left out)
    both = lawful.select("shipment_id", "listed").join(
        lawful0.select("shipment_id", pl.col("listed").alias("listed0")), on="shipment_id"
    )
    assert both.height > 0.95 * lawful.height
    assert (both["listed"] == both["listed0"]).all()
    assert lawful["listed"].mean() > 0.05  # type: ignore[operator]
    # no single field gives a displaced network away: every country it declares in
    # its route is declared in lawful routes too, many times; and field by field
    # (a small world may lack lawful examples of a rare hub in one field) hardly
    # any displaced shipment carries a value that lawful trade never has there
    displaced = s.filter(pl.col("route_displaced"))

    def route(frame: pl.DataFrame) -> pl.Series:
        transit = frame["transit_countries"].explode()
        return pl.concat([frame["origin_country"], frame["dispatch_country"], transit]).drop_nulls()

    counts = dict(route(lawful).value_counts().iter_rows())
    for country in route(displaced).unique():
        assert counts.get(country, 0) >= 20, country
    for col in ("origin_country", "dispatch_country"):
        unseen = ~displaced[col].is_in(lawful[col].drop_nulls().unique().implode())
        assert unseen.mean() < 0.05, col  # type: ignore[operator]
    seen = lawful["transit_countries"].explode().drop_nulls().unique().implode()
    unseen = displaced["transit_countries"].list.eval(~pl.element().is_in(seen)).list.any()
    assert unseen.fill_null(False).mean() < 0.05  # type: ignore[operator]


def test_share_zero_and_one() -> None:
    none = _routes(_world(0.0))
    assert not none["route_displaced"].any()
    every = _routes(_world(1.0))
    traf = every.filter("is_trafficking")
    assert traf["route_displaced"].all()
    assert not traf["listed"].any()


def test_config_rejects_a_share_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="displacement_share"):
        WorldConfig(displacement_share=1.2)
    with pytest.raises(ValueError, match="displacement_share"):
        WorldConfig(displacement_share=-0.1)
