"""The model's quality bars (issue Model) on synthetic worlds, through the real CLI.

    .venv/bin/python benchmarks/bench_quality.py --shipments 600000 --seeds 7 8 9

For each seed, in a temporary data directory: `caravan generate`, `validate --no-gx`,
`features`, then `train --json`, exactly what a data scientist runs. Prints, per seed,
the true share of all trafficking shipments of the test window caught at 1, 2, 5 and
10 % inspection capacity by the model, by the historical rules-only policy and by a
random draw, the model's multiple of each, and the per-typology true recall at 5 %.
Quality figures only (times are printed as progress); nothing is asserted here: the
minimum-quality tests live in tests/models.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

CAPACITIES = ("1%", "2%", "5%", "10%")
BARS = "at 5 %: model >= 3x rules-only, >= 10x random, >= 0.60 of all trafficking"


def _caravan(*args: str) -> str:
    exe = Path(sys.executable).with_name("caravan")
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"caravan {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def evaluate_seed(shipments: int, seed: int, root: Path) -> dict[str, Any]:
    data = root / f"seed-{seed}"
    steps = (
        ("generate", ("--shipments", str(shipments), "--seed", str(seed))),
        ("validate", ("--no-gx",)),
        ("features", ()),
        ("train", ("--json",)),
    )
    out = ""
    for name, extra in steps:
        start = time.perf_counter()
        out = _caravan(name, "--data", str(data), *extra)
        print(f"  seed {seed}: {name} {time.perf_counter() - start:.0f} s", flush=True)
    summary: dict[str, Any] = json.loads(out[out.index("{") :])
    summary["trafficking"] = trafficking_in_window(data, summary["evaluation"]["test_window"])
    return summary


def trafficking_in_window(data: Path, window: list[str]) -> dict[str, int]:
    """How many trafficking shipments of each typology the test window holds (truth/)."""
    start, end = (dt.datetime.fromisoformat(t) for t in window)
    shipments = pl.read_parquet(
        data / "validated" / "shipments.parquet", columns=["shipment_id", "declared_at"]
    )
    counts = (
        shipments.filter(pl.col("declared_at").is_between(start, end))
        .join(pl.read_parquet(data / "truth" / "truth.parquet"), on="shipment_id")
        .filter(pl.col("is_trafficking"))
        .group_by("typology")
        .len()
    )
    return dict(zip(counts["typology"].to_list(), counts["len"].to_list(), strict=True))


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def report(seed: int, summary: dict[str, Any]) -> None:
    ev = summary["evaluation"]
    print(
        f"\nseed {seed}: {ev['n_shipments_in_window']:,} shipments in the test window "
        f"{ev['test_window'][0][:10]} to {ev['test_window'][1][:10]} "
        f"({sum(summary['trafficking'].values())} of them trafficking), "
        f"model version {ev['model_version']}, {summary['trees']} trees, "
        f"{summary['rows']['train']:,} inspected shipments in training"
    )
    print("capacity | model true recall | rules-only | random | model/rules | model/random")
    for k in CAPACITIES:
        a = ev["at_capacity"][k]
        print(
            f"{k:>8} | {a['true_recall']:.3f} | {a['rules_true_recall']:.3f} | "
            f"{a['random_true_recall']:.3f} | {_ratio(a['true_recall'], a['rules_true_recall'])} | "
            f"{_ratio(a['true_recall'], a['random_true_recall'])}"
        )
    per = ev["at_capacity"]["5%"]["per_typology"]
    print(
        "per typology at 5 % (true recall, of n): "
        + ", ".join(
            f"{t} {r:.2f} of {summary['trafficking'].get(t, 0)}" for t, r in sorted(per.items())
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shipments", type=int, default=600_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    args = parser.parse_args()
    print(f"bars ({BARS}); {args.shipments:,} shipments per world")
    with tempfile.TemporaryDirectory(prefix="caravan-quality-") as tmp:
        results = [(s, evaluate_seed(args.shipments, s, Path(tmp))) for s in args.seeds]
    for seed, summary in results:
        report(seed, summary)


if __name__ == "__main__":
    main()
