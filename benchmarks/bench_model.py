"""Model speed and the choice of tree depth.

    .venv/bin/python benchmarks/bench_model.py --shipments 300000 --train-rows 1000000

Prints, from one run on this machine (2 cores):
* training time on `--train-rows` rows (the world's feature rows, resampled to that
  many, labelled by the world's truth: the size of a large administration's history);
* batch scoring (feature frame -> matrix -> probability -> priority, no SHAP) in
  rows/s beside raw LightGBM `predict` on the same matrix;
* explanation with reason codes in rows/s beside raw `pred_contrib` on the same matrix;
* a table of true recall and precision at 5 % capacity and explanation rows/s against
  the trees' maximum depth, from which the default (TrainConfig.max_depth) is chosen.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import polars as pl

from data_contracts.readers import from_frame
from data_contracts.schemas import CONTRACTS
from data_contracts.validate import validate_tables
from features.build import CONTEXT, build_features, model_columns
from features.context import History
from models.dataset import Target, labelled, matrix, time_split
from models.evaluate import top_k_mask
from models.explain import contributions, explain_frame
from models.train import TrainConfig, fit, predict
from pipelines.synthetic import WorldConfig, generate_world
from serving.policy import priorities


def _world(n: int, seed: int) -> tuple[History, pl.DataFrame, pl.DataFrame]:
    world = generate_world(WorldConfig(n_shipments=n, seed=seed, broken_share=0.0))
    raw = {
        t: from_frame(getattr(world, t), CONTRACTS[t])
        for t in ("shipments", "items", "travellers", "outcomes")
    }
    ok = validate_tables(raw).tables
    h = History(
        ok["shipments"].accepted,
        ok["items"].accepted,
        ok["outcomes"].accepted,
        ok["travellers"].accepted,
    )
    return h, build_features(h.shipments, h.items, h), world.truth


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} rows/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shipments", type=int, default=300_000)
    parser.add_argument("--train-rows", type=int, default=1_000_000)
    parser.add_argument("--explain-rows", type=int, default=2_000)
    args = parser.parse_args()
    names = model_columns()

    start = time.perf_counter()
    h, feats, truth = _world(args.shipments, 7)
    print(
        f"world: {feats.height:,} shipments with {len(names)} features "
        f"(built in {time.perf_counter() - start:.0f} s)"
    )

    # Training time at scale: every shipment labelled by the truth, resampled.
    everything = feats.join(truth, on="shipment_id").with_columns(
        pl.col("is_trafficking").cast(pl.Int8).alias("label"), pl.lit(1.0).alias("weight")
    )
    rng = np.random.default_rng(0)
    # Resampled so that training + validation (the rows the fit reads) hold
    # `--train-rows`; the newest 20 % that time_split keeps for testing come on top.
    drawn = round(args.train_rows / 0.8)
    big = everything[rng.integers(0, everything.height, drawn)].sort("declared_at")
    split = time_split(big)
    start = time.perf_counter()
    trained = fit(split, TrainConfig())
    took = time.perf_counter() - start
    print(
        f"training on {split.train.height + split.valid.height:,} rows "
        f"({split.train.height:,} train, {split.valid.height:,} validation): {took:.1f} s, "
        f"{trained.best_iteration} trees"
    )

    # The real model: inspected shipments, IPW, default depth.
    inspected = time_split(labelled(feats, h.outcomes, Target.ARMS))
    model = fit(inspected, TrainConfig()).booster
    x = matrix(feats, names)
    for _ in range(2):
        predict(model, x[:1000])
    start = time.perf_counter()
    raw = model.predict(x)
    t_raw = time.perf_counter() - start
    start = time.perf_counter()
    prob = predict(model, matrix(feats, list(model.feature_name())))
    pri = priorities(prob)
    t_score = time.perf_counter() - start
    assert np.allclose(raw, prob) and len(pri) == len(prob)
    print(
        f"batch scoring of {len(x):,} shipments: raw predict {_rate(len(x), t_raw)}; "
        f"frame -> matrix -> probability -> priority {_rate(len(x), t_score)} "
        f"({t_raw / t_score:.0%} of raw)"
    )

    sample = feats.head(args.explain_rows)
    xs = x[: args.explain_rows]
    start = time.perf_counter()
    contributions(model, xs)
    t_contrib = time.perf_counter() - start
    start = time.perf_counter()
    explain_frame(model, sample, xs, names, list(CONTEXT))
    t_explain = time.perf_counter() - start
    print(
        f"explanation of {len(xs):,} shipments: raw pred_contrib {_rate(len(xs), t_contrib)}; "
        f"with reason codes {_rate(len(xs), t_explain)} ({t_contrib / t_explain:.0%} of raw)"
    )

    # Depth against quality and explanation cost.
    start_t, end_t = inspected.test["declared_at"].min(), inspected.test["declared_at"].max()
    window = feats.filter(pl.col("declared_at").is_between(start_t, end_t))
    bad = window.join(truth, on="shipment_id", how="left")["is_trafficking"].fill_null(False)
    bad_np = bad.to_numpy()
    labels = inspected.test["label"].to_numpy()
    print("max_depth | trees | leaves | true recall@5% | precision@5% (inspected) | explain rows/s")
    for depth in (-1, 12, 8, 6, 4):
        cfg = replace(TrainConfig(), max_depth=depth, num_leaves=63 if depth in (-1, 12) else 31)
        m = fit(inspected, cfg).booster
        w = predict(m, matrix(window, names))
        recall = bad_np[top_k_mask(w, 0.05)].sum() / max(bad_np.sum(), 1)
        t = predict(m, matrix(inspected.test, names))
        mask = top_k_mask(t, 0.05)
        precision = labels[mask].sum() / max(mask.sum(), 1)
        start = time.perf_counter()
        contributions(m, xs)
        rate = len(xs) / (time.perf_counter() - start)
        print(
            f"{'none' if depth < 0 else depth:>9} | {m.num_trees():>5} | {cfg.num_leaves:>6} | "
            f"{recall:>14.3f} | {precision:>24.3f} | {rate:>14,.0f}"
        )


if __name__ == "__main__":
    main()
