"""Point-in-time features of shipments: the one implementation behind both the
batch step (`caravan features`) and the online call the API makes for a new
shipment. Each shipment's features use only history known strictly before its
declared_at.

Both run the same family code on the same feature state. For a few shipments (an
online call holds one) a family's intermediate columns are computed row by row in
Python where frame operations would cost more than the work (a Polars operation
on a one-row frame costs tens to hundreds of microseconds): the lookups in the
point-in-time tables, goods values and texts, party keys, watchlist screening,
traveller linkage. Each such path gives exactly the frame path's values, which
the tests check path against path (`tests/features/test_*_small.py`,
`test_small_paths.py`), besides the online = batch parity tests; the registered
features themselves are Polars expressions evaluated once for either."""

from __future__ import annotations

import polars as pl

from features.context import History, Params
from features.names import shared_normalisation
from features.registry import FeatureSpec, Kind, feature_set_version, specs
from features.state import FeatureState

# Columns kept beside the features for reason texts and display (never model inputs).
CONTEXT = ("office_code", "origin_country", "hs4_main", "value_usd", "gross_mass_kg", "hs_text_line", "hs_text_code", "arms_fit_line", "arms_fit_heading", "part_words")  # noqa: E501  # fmt: skip
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
    # (a batch normalises the parties' names and addresses of the same shipments
    # for several families: each once)
    with shared_normalisation():
        if not isinstance(history, FeatureState):
            state = FeatureState.build(history, params)
        # Every family frame has one row per shipment, in the order of `ships`.
        parts = state.family_frames(ships, items)
    columns = [
        column for part in parts for column in part.iter_columns() if column.name != "shipment_id"
    ]
    frame = ships.hstack(columns)
    return frame.select(*ID, *CONTEXT, *_feature_exprs(specs()))


# specs' ids -> (the specs, kept alive so that their ids stay theirs; expressions)
_EXPRS: dict[tuple[int, ...], tuple[tuple[FeatureSpec, ...], tuple[pl.Expr, ...]]] = {}


def _feature_exprs(registered: list[FeatureSpec]) -> tuple[pl.Expr, ...]:
    """The registered features' expressions, built once per set of specs (an
    online call would otherwise rebuild every expression)."""
    key = tuple(map(id, registered))
    cached = _EXPRS.get(key)
    if cached is not None:
        return cached[1]
    exprs = []
    for spec in registered:
        expr = spec.code_expr(spec.fn()) if spec.kind is Kind.CATEGORICAL else spec.fn()
        exprs.append(
            expr.cast(pl.Float64 if spec.kind is Kind.NUMERIC else pl.Int32).alias(spec.name)
        )
    _EXPRS.clear()  # (one set of specs at a time)
    _EXPRS[key] = (tuple(registered), tuple(exprs))
    return _EXPRS[key][1]


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
