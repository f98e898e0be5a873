"""Scoring for the service: the champion model, swapped without a restart, and the
one scoring function the API calls for new shipments.

The same code as batch scoring: features from `features.build.build_features`,
probability from `models.train.predict`, reasons from `models.explain`, rules from
`serving.rules_engine`, priority and lane from `serving.policy`. Explanations are
the expensive part (LightGBM's `pred_contrib`), so they are computed at once only
for shipments that reach the red or yellow lane; any other is explained on
demand from its stored feature vector, which gives the same values.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from features.build import CONTEXT, build_features
from features.context import History, Params
from features.registry import feature_set_version
from features.state import FeatureState
from features.watchlist import operational
from models.dataset import matrix
from models.explain import explain_frame
from models.registry import CHAMPION, Registry
from models.train import predict
from serving.policy import LaneThresholds, is_forced, lane, priority
from serving.rules_engine import Rule, RuleHit, shipment_hits

log = logging.getLogger(__name__)

SMALL_MATRIX = 64  # up to this many shipments, the model's matrix is built in Python


class ModelNotReadyError(Exception):
    """No champion model is loaded (none promoted yet, or the registry is unreachable)."""


@dataclass(frozen=True)
class ModelHandle:
    """One loaded model version; never mutated, replaced whole on promotion."""

    booster: lgb.Booster
    version: str
    names: tuple[str, ...]
    loaded_at: dt.datetime

    def matrix(self, vectors: list[dict[str, float | None]]) -> np.ndarray:
        """Stored feature vectors as this model's input matrix (NaN where missing)."""
        return np.array(
            [[np.nan if v.get(n) is None else v[n] for n in self.names] for v in vectors],
            dtype=float,
        )

    def predict_vectors(self, vectors: list[dict[str, float | None]]) -> np.ndarray:
        return predict(self.booster, self.matrix(vectors))


class ModelHolder:
    """Holds the champion. `refresh()` loads a newly promoted champion in the
    caller's thread and swaps a single reference: requests in flight keep the
    handle they started with, so none fails during a swap."""

    def __init__(self, registry: Registry, alias: str = CHAMPION) -> None:
        self.registry = registry
        self.alias = alias
        self._handle: ModelHandle | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, ModelHandle] = {}

    @property
    def handle(self) -> ModelHandle:
        handle = self._handle
        if handle is None:
            raise ModelNotReadyError(f"no model with the alias {self.alias!r} is loaded")
        return handle

    @property
    def ready(self) -> bool:
        return self._handle is not None

    def version(self, ref: str) -> ModelHandle:
        """Any version by number (for replays), loaded once and kept."""
        handle = self._cache.get(ref)
        if handle is None:
            booster, mv = self.registry.load(ref)
            handle = ModelHandle(
                booster, mv.version, tuple(booster.feature_name()), dt.datetime.now(dt.UTC)
            )
            self._cache[mv.version] = handle
        return handle

    def refresh(self) -> bool:
        """Load the current champion if it changed; True when a swap happened."""
        with self._lock:
            try:
                current = self.registry.version(self.alias).version
            except Exception as exc:
                log.warning("cannot read the %s alias: %s", self.alias, exc)
                return False
            if self._handle is not None and self._handle.version == current:
                return False
            handle = self.version(current)
            self._handle = handle
            log.info("serving model version %s", current)
            return True


@dataclass(frozen=True)
class Scored:
    shipment_id: str
    office_code: str
    declared_at: dt.datetime
    probability: float
    priority: float
    lane: str
    must_inspect: bool
    rule_hits: list[RuleHit]
    watchlist_score: float
    watchlist_exact: bool
    model_version: str
    feature_set_version: str
    features: dict[str, float | None]
    context: dict[str, Any]
    explanation: list[dict[str, Any]] | None = field(default=None)


def score_shipments(
    ships: pl.DataFrame,
    items: pl.DataFrame,
    history: History | FeatureState,
    model: ModelHandle,
    rules: list[Rule],
    *,
    params: Params | None = None,
    thresholds: LaneThresholds | None = None,
    explain: bool | None = None,
) -> list[Scored]:
    """Score validated shipments against the history (explain: None = red and
    yellow lanes only, True = all, False = none)."""
    feats = build_features(ships, items, history, params)
    names = list(model.names)
    vectors = feats.select(names).to_dicts()
    # a few rows: the matrix from the vectors (the same numbers, without planning a
    # Polars query of one expression per feature); many: the vectorised conversion
    x = model.matrix(vectors) if feats.height <= SMALL_MATRIX else matrix(feats, names)
    prob = predict(model.booster, x)
    by_ship = shipment_hits(rules, ships, items, feats)
    fs_version = feature_set_version()
    context = feats.select("shipment_id", "declared_at", *CONTEXT).to_dicts()
    # The hits that act (priority, lane, must-inspect, queue): the lists as they are
    # now, not the features' point-in-time rule (see features.watchlist.operational).
    now = operational(ships, history).select("shipment_id", "__wl_score", "__wl_exact")
    hits = {str(sid): (score, exact) for sid, score, exact in now.iter_rows()}
    found = [hits.get(str(c["shipment_id"]), (0, False)) for c in context]
    wl_score = np.array([h[0] for h in found], dtype=float) / 100.0
    wl_exact = np.array([h[1] for h in found], dtype=bool)
    out: list[Scored] = []
    for i, ctx in enumerate(context):
        sid = str(ctx["shipment_id"])
        rh = by_ship.get(sid, [])
        severities = [h.severity for h in rh]
        pri = priority(
            float(prob[i]),
            severities,
            watchlist_score=float(min(wl_score[i], 1.0)),
            watchlist_exact=bool(wl_exact[i]),
        )
        forced = is_forced(severities, bool(wl_exact[i]))
        out.append(
            Scored(
                shipment_id=sid,
                office_code=str(ctx["office_code"]),
                declared_at=ctx["declared_at"],
                probability=float(prob[i]),
                priority=pri,
                lane=lane(pri, forced, thresholds),
                must_inspect=forced,
                rule_hits=rh,
                watchlist_score=float(wl_score[i] * 100),
                watchlist_exact=bool(wl_exact[i]),
                model_version=model.version,
                feature_set_version=fs_version,
                features={
                    k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v))
                    for k, v in vectors[i].items()
                },
                context={k: v for k, v in ctx.items() if k not in ("shipment_id", "declared_at")},
            )
        )
    wanted = [
        i for i, s in enumerate(out) if explain or (explain is None and s.lane in ("red", "yellow"))
    ]
    if wanted:
        rows = explain_frame(model.booster, feats[wanted], x[wanted], names, list(CONTEXT))
        for i, row in zip(wanted, rows, strict=True):
            out[i] = _with_explanation(out[i], row["reasons"])
    return out


def _with_explanation(s: Scored, reasons: list[dict[str, Any]]) -> Scored:
    return Scored(**{**s.__dict__, "explanation": reasons})


def explain_vector(
    model: ModelHandle,
    vector: dict[str, float | None],
    context: dict[str, Any],
    shipment_id: str,
    contrib: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Reasons computed later from a stored feature vector: the same values as at
    scoring time for the same model version (`contrib`: the vector's contributions,
    when already computed)."""
    names = list(model.names)
    x = model.matrix([vector])
    frame = pl.DataFrame([{"shipment_id": shipment_id, **{k: context.get(k) for k in CONTEXT}}])
    rows = explain_frame(model.booster, frame, x, names, list(CONTEXT), contrib=contrib)
    return list(rows[0]["reasons"])
