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
import operator
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from features.build import CONTEXT, build_features
from features.context import History, Params
from features.inputs import model_extras, normal_extras
from features.registry import Family, feature_set_version, specs
from features.state import FeatureState
from features.watchlist import operational
from models.dataset import matrix
from models.explain import TreeParts, as_dicts, contributions, rank_reasons
from models.registry import CHAMPION, Registry
from models.train import predict
from serving.policy import LaneThresholds, is_forced, lane, priority
from serving.rules_engine import Rule, RuleHit, rule_fields, shipment_hits

log = logging.getLogger(__name__)

SMALL_MATRIX = 64  # up to this many shipments, the model's matrix is built in Python


class ModelNotReadyError(Exception):
    """No champion model is loaded (none promoted yet, or the registry is unreachable)."""


class ModelInputError(Exception):
    """An input of the served model cannot be supplied (e.g. an export column the
    model was trained with whose codes the model version does not record)."""


@dataclass(frozen=True)
class ModelHandle:
    """One loaded model version; never mutated, replaced whole on promotion."""

    booster: lgb.Booster
    version: str
    names: tuple[str, ...]
    loaded_at: dt.datetime
    # The export's own columns it was trained with (see features.inputs.model_extras):
    # {"numeric": [extra_* names], "categorical": {extra_* name: code table}}.
    extras: dict[str, Any] = field(default_factory=lambda: normal_extras(None))
    # The booster's trees in parts, for contributions computed in parallel
    # (`models.explain.TreeParts`); None: computed whole.
    parts: TreeParts | None = field(default=None, compare=False, repr=False)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """The contributions (TreeSHAP, log-odds; base value last) of the rows of `x`."""
        return contributions(self.booster, x) if self.parts is None else self.parts.contributions(x)

    def extra_inputs(self) -> dict[str, str]:
        """The extras a declaration may bring for this model: the column's name as the
        export called it (without `extra_`) -> "number" or "text"."""
        out = {n.removeprefix("extra_"): "number" for n in self.extras["numeric"]}
        out.update({n.removeprefix("extra_"): "text" for n in self.extras["categorical"]})
        return out

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
            run_id = mv.run_id
            extras = model_extras(mv.tags, lambda path: self.registry.artifact_json(run_id, path))
            handle = ModelHandle(
                booster,
                mv.version,
                tuple(booster.feature_name()),
                dt.datetime.now(dt.UTC),
                extras,
                TreeParts(booster),
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
    # The watchlist hit that acted (`watchlist_match`), None when none scored
    # at least features.watchlist.SCORE_FLOOR.
    watchlist_match: dict[str, Any] | None = field(default=None)
    # The hit is weak (features.screening.weak_match): a near miss for the priority.
    watchlist_weak: bool = field(default=False)


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
    extras: Mapping[str, Mapping[str, Any]] | None = None,
    features: pl.DataFrame | None = None,
) -> list[Scored]:
    """Score validated shipments against the history (explain: None = red and
    yellow lanes only, True = all, False = none). `extras`: per shipment id, the
    export columns a declaration brought (name -> value) for a model trained with
    them (see `with_extras`); missing ones are scored as missing. `features`:
    their features when already built (`sequence_features`)."""
    if features is None:
        features = build_features(ships, items, history, params)
    feats = with_extras(features, model, extras or {})
    names = list(model.names)
    shown = ("shipment_id", "declared_at", *CONTEXT)
    if set(names).union(shown).issubset(feats.columns):
        # (the rows once, then their columns: selecting sixty-odd columns by name
        # costs more than converting every column of a few rows)
        rows = feats.to_dicts()
        vectors = [{n: row[n] for n in names} for row in rows]
        context = [{n: row[n] for n in shown} for row in rows]
    else:  # (raises, naming the missing column)
        vectors = feats.select(names).to_dicts()
        context = feats.select(*shown).to_dicts()
    # a few rows: the matrix from the vectors (the same numbers, without planning a
    # Polars query of one expression per feature); many: the vectorised conversion
    x = model.matrix(vectors) if feats.height <= SMALL_MATRIX else matrix(feats, names)
    prob = predict(model.booster, x)
    fs_version = _feature_set_version(model)
    # The hits that act (priority, lane, must-inspect, queue): the lists as they are
    # now, not the features' point-in-time rule (see features.watchlist.operational).
    # A party's listed id or identity document, and a linked traveller's listed
    # name or document, act like an exact party hit (`__wl_exact`). The score is
    # that of the hit that acts (exact, then one that counts, then the best), and a
    # weak hit counts as a near miss (serving.policy).
    now = operational(ships, history)
    # Rules act too: their watchlist fields read the lists as they are now.
    by_ship = shipment_hits(rules, ships, items, watchlist_now(feats, now, rules))
    hits = {str(row["shipment_id"]): row for row in now.iter_rows(named=True)}
    found = [hits.get(str(c["shipment_id"]), {}) for c in context]
    wl_score = np.array([h.get("__wl_hit_score") or 0 for h in found], dtype=float) / 100.0
    wl_exact = np.array([bool(h.get("__wl_exact")) for h in found], dtype=bool)
    wl_weak = np.array([h.get("__wl_weak") is not None for h in found], dtype=bool)
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
            watchlist_weak=bool(wl_weak[i]),
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
                watchlist_match=watchlist_match(found[i]),
                watchlist_weak=bool(wl_weak[i]),
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
        contrib = model.contributions(x[wanted])
        contexts = [{c: context[i][c] for c in CONTEXT} for i in wanted]
        reasons = as_dicts(rank_reasons(contrib, x[wanted], names, contexts))
        for i, given in zip(wanted, reasons, strict=True):
            out[i] = _with_explanation(out[i], given)
    return out


def sequence_features(
    state: FeatureState, ships: pl.DataFrame, items: pl.DataFrame
) -> pl.DataFrame:
    """`build_features` of new shipments declared in time order, appended to the
    state on the way (`FeatureState.append_sequence`): each one's features count
    the shipments of `ships` declared before it, as if they were sent one by one.
    Raises `features.state.StateError` (nothing appended) when one is declared
    before the state's `as_of`."""
    from features.build import ID, _feature_exprs

    columns = [
        column
        for part in state.append_sequence(ships, items)
        for column in part.iter_columns()
        if column.name != "shipment_id"
    ]
    return ships.hstack(columns).select(*ID, *CONTEXT, *_feature_exprs(specs()))


# (model handle, the registered specs, its feature-set version) of the handles scored
# with lately: the version hashes every spec, a tenth of a millisecond a request.
_FS_VERSIONS: list[tuple[ModelHandle, tuple[Any, ...], str]] = []


def _feature_set_version(model: ModelHandle) -> str:
    """`feature_set_version(model.extras)`, computed once per model handle (a
    promotion brings a new one) and set of registered features."""
    registered = tuple(specs())
    for handle, seen, version in _FS_VERSIONS:
        same = len(seen) == len(registered) and all(map(operator.is_, seen, registered))
        if handle is model and same:
            return version
    version = feature_set_version(model.extras)
    _FS_VERSIONS[:] = [(model, registered, version), *_FS_VERSIONS[:3]]
    return version


def watchlist_now(feats: pl.DataFrame, now: pl.DataFrame, rules: Sequence[Rule]) -> pl.DataFrame:
    """`feats` with the watchlist family's features as screened now (`now`: the rows of
    `features.watchlist.operational`), for the rules to read: a rule that acts on a
    watchlist match ("watchlist_best_score >= 85 and chapter 93: must inspect") sees a
    party listed today, as the lane does, and not only the model's point-in-time
    values (which leave out entries listed after the declaration). Unchanged when
    no rule reads one of them."""
    read = {f for r in rules for f in rule_fields(r)}
    if not read:
        return feats
    columns = set(feats.columns)
    names = [s.name for s in specs() if s.family is Family.WATCHLIST and s.name in columns]
    if not read.intersection(names):
        return feats
    current = now.select(
        "shipment_id",
        *(
            spec.fn().cast(feats.schema[spec.name]).alias(spec.name)
            for spec in specs()
            if spec.name in names
        ),
    )
    return feats.drop(names).join(current, on="shipment_id", how="left", maintain_order="left")


UNSEEN_CODE = -1  # a categorical extra's value the model's code table does not hold


def with_extras(
    feats: pl.DataFrame, model: ModelHandle, extras: Mapping[str, Mapping[str, Any]]
) -> pl.DataFrame:
    """The model's `extra_*` inputs as columns of `feats`, from the extras each
    declaration brought (`extras`: shipment id -> {column: value}; see
    `check_extras`): numbers as given, text coded with the code table the model
    was trained with (code = position + 1, as `caravan features` coded it; 0 for a
    missing value, as in training; UNSEEN_CODE for a value the table does not hold,
    which the model reads as it reads any category it never saw). A number not
    given is missing (null); a category not given gets 0, the code training gave
    a missing value. Raises ModelInputError naming an input the model needs that
    cannot be supplied."""
    wanted = [n for n in model.names if n.startswith("extra_") and n not in feats.columns]
    if not wanted:
        return feats
    numeric = set(model.extras["numeric"])
    tables = model.extras["categorical"]
    unknown = [n for n in wanted if n not in numeric and n not in tables]
    if unknown:
        raise ModelInputError(
            f"model version {model.version} uses {', '.join(unknown)} (columns of an "
            "imported export) but does not record how they were coded: it cannot score "
            "declarations; retrain it (`caravan features`, `caravan train`) and promote "
            "the new version"
        )
    ids = [str(i) for i in feats.get_column("shipment_id").to_list()]
    columns = []
    for name in wanted:
        column = name.removeprefix("extra_")
        given = [extras.get(sid, {}).get(column) for sid in ids]
        if name in numeric:
            columns.append(pl.Series(name, given, dtype=pl.Float64, strict=False))
            continue
        codes = {v: i + 1 for i, v in enumerate(tables[name])}
        columns.append(
            pl.Series(
                name,
                [0 if v is None else codes.get(str(v), UNSEEN_CODE) for v in given],
                dtype=pl.Int32,
            )
        )
    return feats.with_columns(columns)


def check_extras(model: ModelHandle, given: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of the extras one declaration brought, for the served model: (field,
    reason) for a name the model was not trained with, or a value of the wrong kind
    (a number for a numeric column, text for a categorical one)."""
    accepted = model.extra_inputs()
    problems = []
    for name, value in given.items():
        kind = accepted.get(name)
        if kind is None:
            known = ", ".join(sorted(accepted)) or "none"
            problems.append(
                (
                    f"extras.{name}",
                    f"{name!r} is not an input of the served model (version "
                    f"{model.version}); the extras it accepts: {known}",
                )
            )
        elif value is None:
            continue
        elif kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append((f"extras.{name}", f"{name!r} is a number for this model"))
        elif kind == "text" and not isinstance(value, str):
            problems.append((f"extras.{name}", f"{name!r} is text (a category) for this model"))
    return problems


def watchlist_match(row: dict[str, Any]) -> dict[str, Any] | None:
    """The hit that acted, from a row of `features.watchlist.operational`: the
    listed entry (`entry_id`, `name`: the listed spelling matched, `entity_type`:
    "individual" or "entity"), the `party` (role), `by` ("name" or "document": a
    listed document number, exact), `exact`, `traveller_record_id` when a linked
    traveller record matched (None: the party itself), `score` (0-100), `words`
    (the name words a name match rests on), `weak` and `weak_reason` (a weak
    match, "one_word", "initials" or "company_individual", counts as a near miss:
    `features.screening.weak_match`). None when nothing matched."""
    if not row or row.get("__wl_entry") is None:
        return None
    by = row.get("__wl_by") or "name"
    weak = row.get("__wl_weak")
    score = row.get("__wl_hit_score")
    return {
        "entry_id": row["__wl_entry"],
        "name": row.get("__wl_name"),
        "party": row.get("__wl_party"),
        "by": by,
        "exact": bool(row.get("__wl_exact")),  # (the best hit is exact when any is)
        "traveller_record_id": row.get("__wl_traveller"),
        "entity_type": row.get("__wl_entity_type"),
        "score": None if score is None else int(score),
        "words": row.get("__wl_words"),
        "weak": weak is not None,
        "weak_reason": weak,
    }


def _with_explanation(s: Scored, reasons: list[dict[str, Any]]) -> Scored:
    return Scored(**{**s.__dict__, "explanation": reasons})


def explain_vector(
    model: ModelHandle,
    vector: dict[str, float | None],
    context: dict[str, Any],
    contrib: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Reasons computed later from a stored feature vector: the same values as at
    scoring time for the same model version (`contrib`: the vector's contributions,
    when already computed)."""
    x = model.matrix([vector])
    contrib = model.contributions(x) if contrib is None else contrib
    shown = [{k: context.get(k) for k in CONTEXT}]
    return as_dicts(rank_reasons(contrib, x, list(model.names), shown))[0]
