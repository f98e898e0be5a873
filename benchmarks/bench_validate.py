"""Validation speed: rows/s of `caravan validate` on a generated world.

    .venv/bin/python benchmarks/bench_validate.py --shipments 1000000

Generates the world (in memory, then written to a temporary raw/), then times,
in the same run, validation without and with the Great Expectations report.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from data_contracts.settings import DataLayout
from pipelines.generate import write_world
from pipelines.synthetic import WorldConfig, generate_world
from pipelines.validate import run_validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shipments", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-gx", action="store_true", help="skip the run with GX")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        layout = DataLayout(Path(tmp))
        start = time.perf_counter()
        world = generate_world(WorldConfig(n_shipments=args.shipments, seed=args.seed))
        write_world(world, layout)
        gen = time.perf_counter() - start
        rows = sum(
            getattr(world, t).height for t in ("shipments", "items", "travellers", "outcomes")
        )
        print(
            f"world: {args.shipments:,} shipments, {rows:,} raw rows in all; "
            f"generated and written in {gen:.1f} s ({rows / gen:,.0f} rows/s)"
        )
        runs = [("contract rules only (--no-gx)", False)]
        if not args.no_gx:
            runs.append(("rules + Great Expectations report", True))
        for label, gx in runs:
            start = time.perf_counter()
            run = run_validate(layout, gx=gx)
            took = time.perf_counter() - start
            quarantined = sum(t.quarantine.height for t in run.result.tables.values())
            print(
                f"validate, {label}: {took:.1f} s, {rows / took:,.0f} rows/s "
                f"({quarantined:,} rows quarantined)"
            )


if __name__ == "__main__":
    main()
