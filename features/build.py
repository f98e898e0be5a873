"""Point-in-time features of shipments: the one implementation behind both the
batch step (`caravan features`) and the online call the API makes for a new
shipment. Each shipment's features use only history known strictly before its
declared_at."""

from __future__ import annotations

import polars as pl

from features.context import History, Params
from features.registry import Kind, feature_set_version, specs
from features.state import FeatureState

# Columns kept beside the features for reason texts and display (never model inputs).
CONTEXT = ("office_code", "origin_country", "hs4_main", "value_usd", "gross_mass_kg")
ID = ("shipment_id", "declared_at")


def build_features(
    ships: pl.DataFrame,
    items: pl.DataFrame,
    history: History | FeatureState,
    params: Params | None = None,
) -> pl.DataFrame:
    """Features of `ships` (validated shipments, with their `items`) against the
    history, given as a `History` (a `FeatureState` is built from it) or as a
    built `FeatureState`.

    In batch, the history holds the same shipments (and everything else); online
    it is the state recorded so far. The result has one row per shipment, in the
    order given: `shipment_id`, `declared_at`, the context columns, then every
    registered feature (categoricals as stable integer codes).
    """
    if isinstance(history, FeatureState):
        state = history
        if params is not None and params != state.params:
            raise ValueError("params differ from those the feature state was built with")
    else:
        state = FeatureState.build(history, params)
    frame = ships
    for part in state.family_frames(ships, items):
        frame = frame.join(part, on="shipment_id", how="left", maintain_order="left")
    exprs = []
    for spec in specs():
        expr = spec.code_expr(spec.fn()) if spec.kind is Kind.CATEGORICAL else spec.fn()
        exprs.append(
            expr.cast(pl.Float64 if spec.kind is Kind.NUMERIC else pl.Int32).alias(spec.name)
        )
    return frame.select(*ID, *CONTEXT, *exprs)


def online_features(ships: pl.DataFrame, items: pl.DataFrame, state: FeatureState) -> pl.DataFrame:
    """Features of new shipments (declared at or after `state.as_of`) against the
    state: the API's call. Raises `features.state.StateError` for earlier ones."""
    state.check_online(ships)
    return build_features(ships, items, state)


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
    "online_features",
]
