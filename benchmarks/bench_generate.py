"""Time the synthetic world generator: seconds per stage and rows/s per table.

    .venv/bin/python benchmarks/bench_generate.py --shipments 1000000

Prints figures; asserts nothing."""

from __future__ import annotations

import argparse
import itertools
import time

from pipelines.synthetic import WorldConfig, generate_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shipments", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    stages: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def progress(stage: str, _fraction: float) -> None:
        stages.append((stage, time.perf_counter()))

    world = generate_world(WorldConfig(n_shipments=args.shipments, seed=args.seed), progress)
    total = time.perf_counter() - t0
    print(f"generate_world(n_shipments={args.shipments:,}, seed={args.seed})")
    print(f"{'stage':<24}{'seconds':>10}")
    for (name, start), (_, end) in itertools.pairwise(stages):
        print(f"{name:<24}{end - start:>10.2f}")
    print(f"{'total':<24}{total:>10.2f}")
    print(f"\n{'table':<18}{'rows':>12}{'rows/s (whole run)':>22}")
    for name in ("shipments", "items", "travellers", "outcomes", "broken"):
        rows = getattr(world, name).height
        print(f"{name:<18}{rows:>12,}{rows / total:>22,.0f}")
    all_rows = sum(
        getattr(world, n).height for n in ("shipments", "items", "travellers", "outcomes")
    )
    print(f"{'all raw rows':<18}{all_rows:>12,}{all_rows / total:>22,.0f}")


if __name__ == "__main__":
    main()
