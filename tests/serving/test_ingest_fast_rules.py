"""The single-shipment rule path searches each `matches` pattern once per call over
all the texts it may test (one Polars call per pattern instead of one per text):
its hits stay those of the batch path (one Polars pass), for one shipment and for
a few at a time, with patterns on goods lines, inside `line`, under `not`, on
shipment fields, on texts longer than the 512 characters a pattern reads."""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pytest

from serving.rules_engine import SMALL_BATCH, evaluate_frame, rule_frame, shipment_hits
from tests.serving.test_rules_engine import (
    FEAT_SCHEMA,
    ITEM_SCHEMA,
    LEAVES,
    SHIP_SCHEMA,
    leaf,
    make,
    random_world,
)

TEXTS = [
    "Spare parts",
    "PARTS",
    "Патроны 7.62",
    "Pistol grip",
    "pistol",
    "x" * 511 + "pistol",  # the pattern reads the first 512 characters only
    "x" * 509 + "pistol",
    "",
    None,
]
PATTERNS: list[dict[str, Any]] = [
    leaf("item.description", "matches", "(?i)pistol"),
    leaf("item.description", "matches", "^[^a-z]*$"),
    leaf("item.description", "matches", "атрон|grip$"),
    leaf("mode", "matches", "^(post|air)$"),
    leaf("origin_country", "matches", "^[AT]"),
    {
        "line": {
            "all": [
                leaf("item.description", "matches", "(?i)pistol"),
                leaf("item.value", "gt", 500),
            ]
        }
    },
    {"not": leaf("item.description", "matches", "(?i)^(spare )?parts?$")},
]


def _condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 2 or roll < 0.45:
        return rng.choice(PATTERNS if rng.random() < 0.7 else LEAVES)
    if roll < 0.6:
        return {"not": _condition(rng, depth + 1)}
    kids = [_condition(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return {"all" if roll < 0.8 else "any": kids}


@pytest.mark.parametrize("seed", [11, 12])
def test_a_few_shipments_in_python_agree_with_the_batch_frame(seed: int) -> None:
    rng = random.Random(seed)
    ships, items, feats = random_world(rng, 120)
    for it in items:
        it["description"] = rng.choice(TEXTS)
    rules = [make(_condition(rng), id=f"r{v}", version=1) for v in range(30)]
    ship_df = pl.DataFrame(ships, schema=SHIP_SCHEMA)
    item_df = pl.DataFrame(items, schema=ITEM_SCHEMA)
    feat_df = pl.DataFrame(feats, schema=FEAT_SCHEMA)
    table = evaluate_frame(rules, rule_frame(ship_df, item_df, feat_df))
    expected: dict[str, list[tuple[str, int, str]]] = {}
    for sid, rid, version, severity in table.iter_rows():
        expected.setdefault(sid, []).append((rid, version, severity))
    got: dict[str, list[tuple[str, int, str]]] = {}
    start = 0
    for size in [1, 2, 5, SMALL_BATCH, 1, 3] * 10:  # the Python path, a few at a time
        chunk = ship_df.slice(start, size)
        if chunk.is_empty():
            break
        start += chunk.height
        ids = chunk["shipment_id"]
        found = shipment_hits(
            rules,
            chunk,
            item_df.filter(pl.col("shipment_id").is_in(ids.implode())),
            feat_df.filter(pl.col("shipment_id").is_in(ids.implode())),
        )
        for sid, hits in found.items():
            got[sid] = [(h.rule_id, h.rule_version, h.severity) for h in hits]
    assert start == ship_df.height
    assert got == expected
    matched = {r.id for r in rules if "matches" in str(r.condition)}
    hit_ids = {h[0] for hits in expected.values() for h in hits}
    assert matched & hit_ids  # patterns do hit (the comparison is not vacuous)
