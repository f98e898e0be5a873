"""`caravan generate`: writes a synthetic world's raw/ inputs and its truth/."""

from __future__ import annotations

from collections.abc import Callable

from data_contracts.settings import DataLayout
from pipelines.synthetic import World, WorldConfig, generate_world
from pipelines.validate import write_parquet

RAW_OUTPUTS = ("shipments", "items", "travellers", "outcomes")


def write_world(world: World, layout: DataLayout) -> dict[str, int]:
    """Write the world; return the row count of each file written."""
    layout.make_dirs()
    counts: dict[str, int] = {}
    for table in RAW_OUTPUTS:
        frame = getattr(world, table)
        write_parquet(frame, layout.raw / f"{table}.parquet")
        counts[f"raw/{table}"] = frame.height
    truths = {
        "truth": world.truth,
        "traveller_links": world.traveller_links,
        "parties": world.parties,
        "broken_rows": world.broken,
    }
    for name, frame in truths.items():
        write_parquet(frame, layout.truth / f"{name}.parquet")
        counts[f"truth/{name}"] = frame.height
    return counts


def run_generate(
    layout: DataLayout, config: WorldConfig, progress: Callable[[str, float], None] | None = None
) -> tuple[World, dict[str, int]]:
    world = generate_world(config, progress=progress)
    return world, write_world(world, layout)
