"""Explanations: SHAP contributions from LightGBM's native `pred_contrib`,
turned into the registry's plain-language reason codes.

For a tree model, `pred_contrib` gives exact TreeSHAP values in log-odds: the
contributions of the features plus the base value add up to the raw score. The
effect of a reason on the probability is shown as the drop in probability if
that reason's contribution were removed (all others kept).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from features.registry import REGISTRY, render_reason
from models.train import prediction_threads


@dataclass(frozen=True)
class Reason:
    feature: str
    family: str
    value: float | None
    log_odds: float
    probability_effect: float
    text_en: str
    text_ru: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def contributions(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """(n, features + 1): per-feature log-odds contributions, base value last."""
    return np.asarray(booster.predict(x, pred_contrib=True, num_threads=prediction_threads(len(x))))


# One row's TreeSHAP costs about T * L * D^2 (trees, leaves, depth): some 12 ms for
# 500 trees of 63 leaves on this project's machine, 0.7 ms for a synthetic world's
# early-stopped champion of 39. Contributions add up over trees, so a large model's
# trees are cut into consecutive parts, each its own Booster, computed in parallel
# threads (LightGBM releases the GIL while it predicts) and summed: the same values
# (to float rounding, ~1e-13), in about 7 ms instead of 12 on two cores. (Started
# while the asking thread goes on with Python work, a part waits for the GIL, up to
# the 5 ms switch interval: the asking thread computes a part itself meanwhile.)
PARALLEL_MIN_TREES = 100  # fewer: a thread hand-off costs more than it saves

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_splitting = 0  # computations now running in parts (under _POOL_LOCK)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="shap")
        return _POOL


class TreeParts:
    """A booster's contributions, computed over its trees in parts in parallel when
    that pays: the model has at least PARALLEL_MIN_TREES iterations, the call has
    rows few enough that `predict` would run on one thread (`prediction_threads`;
    more run whole, with OpenMP over the rows; a batch's red and yellow shipments,
    some 60 of 1,000, took 0.85 s on one core with a 500-tree model), there is more
    than one CPU and no other computation is running in parts (under load, the
    cores are busy with other requests: a call then runs whole). Each part is a
    Booster of its own (LightGBM keeps a booster's prediction range in the booster:
    two threads predicting different tree ranges with one booster clash)."""

    def __init__(self, booster: lgb.Booster, parts: int | None = None) -> None:
        self.booster = booster
        cpus = os.cpu_count() or 1
        parts = min(cpus, 4) if parts is None else parts
        # (the trees `predict` uses by default: up to the best iteration when early
        # stopping set one on a booster that kept training past it)
        best = booster.best_iteration
        iterations = best if best > 0 else booster.current_iteration()
        self.parts: tuple[lgb.Booster, ...] = ()
        self.calls_in_parts = 0  # (for tests and measurements)
        if parts >= 2 and iterations >= PARALLEL_MIN_TREES:
            bounds = np.linspace(0, iterations, parts + 1).round().astype(int)
            self.parts = tuple(
                lgb.Booster(
                    model_str=booster.model_to_string(
                        num_iteration=int(end - start), start_iteration=int(start)
                    )
                )
                for start, end in itertools.pairwise(bounds.tolist())
            )

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(n, features + 1): the contributions of the rows of `x`, as `contributions`
        gives them: in parts when that pays (the first in this thread, the others in
        the pool's, each started at once: this thread releases the GIL in LightGBM
        meanwhile), else whole."""
        global _splitting
        if not self.parts or prediction_threads(len(x)) != 1:
            return contributions(self.booster, x)
        with _POOL_LOCK:
            split = _splitting == 0
            _splitting += int(split)
            self.calls_in_parts += int(split)
        if not split:
            return contributions(self.booster, x)
        try:
            pool = _pool()
            futures = [pool.submit(_part_contributions, part, x) for part in self.parts[1:]]
            try:
                total = _part_contributions(self.parts[0], x)
            finally:
                wait(futures)  # (none left running, should one fail)
            for future in futures:
                total = total + future.result()
            return total
        finally:
            with _POOL_LOCK:
                _splitting -= 1


def _part_contributions(part: lgb.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(part.predict(x, pred_contrib=True, num_threads=1))


def rank_reasons(
    contrib: np.ndarray,
    x: np.ndarray,
    names: list[str],
    contexts: list[dict[str, Any]],
    *,
    top: int = 5,
    min_log_odds: float = 0.05,
) -> list[list[Reason]]:
    """For each row of `contrib` (n, features + 1) and its inputs `x`, the
    strongest reasons pushing the score up, strongest first (ties by position).
    The ranking and the probability effects are computed for all rows at once."""
    n = len(contrib)
    feats = contrib[:, :-1]
    k = min(top, feats.shape[1])
    part = (
        np.argpartition(-feats, k - 1, axis=1)[:, :k]
        if k < feats.shape[1]
        else np.tile(np.arange(feats.shape[1]), (n, 1))
    )
    order = np.take_along_axis(
        part, np.lexsort((part, -np.take_along_axis(feats, part, 1))), axis=1
    )[:, :k]
    chosen = np.take_along_axis(feats, order, axis=1)
    raw = contrib.sum(axis=1)
    prob = 1.0 / (1.0 + np.exp(-raw))
    effect = prob[:, None] - 1.0 / (1.0 + np.exp(-(raw[:, None] - chosen)))
    values = np.take_along_axis(x, order, axis=1)
    out: list[list[Reason]] = []
    for i in range(n):
        row: list[Reason] = []
        for j in range(k):
            c = float(chosen[i, j])
            if c < min_log_odds:
                break
            name = names[order[i, j]]
            v = float(values[i, j])
            value = None if math.isnan(v) else v
            spec = REGISTRY.get(name)
            row.append(
                Reason(
                    feature=name,
                    family=spec.family.value if spec else "extra",
                    value=value,
                    log_odds=round(c, 6),
                    probability_effect=round(float(effect[i, j]), 6),
                    text_en=render_reason(name, value, contexts[i], "en"),
                    text_ru=render_reason(name, value, contexts[i], "ru"),
                )
            )
        out.append(row)
    return out


def reasons(
    contrib: np.ndarray,
    names: list[str],
    values: np.ndarray,
    context: dict[str, Any],
    *,
    top: int = 5,
    min_log_odds: float = 0.05,
) -> list[Reason]:
    """The strongest reasons pushing one shipment's score up, strongest first."""
    return rank_reasons(
        contrib[None, :],
        np.asarray(values, dtype=float)[None, :],
        names,
        [context],
        top=top,
        min_log_odds=min_log_odds,
    )[0]


def explain_frame(
    booster: lgb.Booster,
    frame: pl.DataFrame,
    x: np.ndarray,
    names: list[str],
    context_columns: list[str],
    *,
    top: int = 5,
    min_log_odds: float = 0.05,
    contrib: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Reasons for every row of `frame` (its matrix `x`), as plain dicts; `contrib`:
    the rows' contributions when already computed."""
    contrib = contributions(booster, x) if contrib is None else contrib
    contexts = frame.select([c for c in context_columns if c in frame.columns]).to_dicts()
    reasons = as_dicts(
        rank_reasons(contrib, x, names, contexts, top=top, min_log_odds=min_log_odds)
    )
    ids = frame["shipment_id"].to_list()
    return [
        {
            "shipment_id": ids[i],
            "base_value": float(contrib[i, -1]),
            "raw_score": float(contrib[i].sum()),
            "reasons": reasons[i],
        }
        for i in range(len(ids))
    ]


def as_dicts(ranked: list[list[Reason]]) -> list[list[dict[str, Any]]]:
    """Ranked reasons (`rank_reasons`) as plain dicts, as a score stores them."""
    return [[r.as_dict() for r in row] for row in ranked]
