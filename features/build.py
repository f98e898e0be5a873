"""Point-in-time features of shipments: the one implementation behind both the
batch step (`caravan features`) and the online call the API makes for a new
shipment. Each shipment's features use only history known strictly before its
declared_at."""

from __future__ import annotations

import polars as pl

from features import goods, network, shipment, trader, travellers, watchlist
from features.context import History, Params, party_keys
from features.registry import Kind, feature_set_version, specs

# Columns kept beside the features for reason texts and display (never model inputs).
CONTEXT = ("office_code", "origin_country", "hs4_main", "value_usd", "gross_mass_kg")
ID = ("shipment_id", "declared_at")


def build_features(
    ships: pl.DataFrame, items: pl.DataFrame, history: History, params: Params | None = None
) -> pl.DataFrame:
    """Features of `ships` (validated shipments, with their `items`) against `history`.

    In batch, `history` holds the same shipments (and everything else); online it
    is the state recorded so far. The result has one row per shipment, in the
    order given: `shipment_id`, `declared_at`, the context columns, then every
    registered feature (categoricals as stable integer codes).
    """
    params = params or Params()
    batch = history.shipments is ships
    ships_k = party_keys(ships)
    hist_ships = ships_k if batch else party_keys(history.shipments)
    hist = History(
        hist_ships, history.items, history.outcomes, history.travellers, history.watchlist
    )

    base = shipment.prepare(ships, items, params)
    goods_frame = goods.prepare(ships, items, hist, params)
    if batch:
        underv = goods_frame.select(
            "shipment_id", (pl.col("__min_uv_z") < -2.0).fill_null(False).alias("undervalued")
        )
    else:
        underv = goods.undervalued(hist.shipments, hist.items, hist, params)
    trader_frame = trader.prepare(ships_k, hist, underv)
    watch_frame = watchlist.prepare(ships_k, hist, params)
    traveller_frame = travellers.prepare(ships_k, hist, params)
    network_frame = network.prepare(ships_k, hist, params)

    frame = ships
    for part in (base, goods_frame, trader_frame, watch_frame, traveller_frame, network_frame):
        frame = frame.join(part, on="shipment_id", how="left", maintain_order="left")
    exprs = []
    for spec in specs():
        expr = spec.code_expr(spec.fn()) if spec.kind is Kind.CATEGORICAL else spec.fn()
        exprs.append(
            expr.cast(pl.Float64 if spec.kind is Kind.NUMERIC else pl.Int32).alias(spec.name)
        )
    return frame.select(*ID, *CONTEXT, *exprs)


def model_columns() -> list[str]:
    return [s.name for s in specs()]


def categorical_columns() -> list[str]:
    return [s.name for s in specs() if s.kind is Kind.CATEGORICAL]


__all__ = [
    "CONTEXT",
    "build_features",
    "categorical_columns",
    "feature_set_version",
    "model_columns",
]
