"""`matches` conditions run in Rust's linear-time engine on the single-shipment path
too (security review round 2, F2): patterns with adjacent overlapping repeats, which
Python's backtracking `re` took 12-26 s to search on 512 characters, are searched at
once, and the single and batch paths agree by construction (even where Python's
`re` and Rust's engine read a pattern differently)."""

from __future__ import annotations

import polars as pl
import pytest

from tests.serving.test_rules_engine import AT, evaluate, evaluate_frame, leaf, make, rule_frame


def _both(pattern: str, text: str) -> tuple[bool, bool]:
    rule = make(leaf("item.description", "matches", pattern))
    single = evaluate(rule, {}, [{"description": text}], {}, AT)
    ships = pl.DataFrame({"shipment_id": ["s"], "declared_at": [AT]})
    items = pl.DataFrame({"shipment_id": ["s"], "description": [text]})
    batch = evaluate_frame([rule], rule_frame(ships, items), AT).height == 1
    return single, batch


@pytest.mark.parametrize(
    ("pattern", "text", "hit"),
    [
        (r".*.*.*=", "a" * 512, False),
        (r"\s*\s*\s*x", " " * 512, False),
        (r"[0-9 ]*[0-9 ]*[0-9 ]*mm", "1 " * 256, False),
        (r"[0-9 ]*[0-9 ]*[0-9 ]*mm", "barrel 7 62 mm", True),
        # Python's `$` also matches before a final newline, Rust's only at the end:
        # the single path used to hit where the batch path did not
        (r"mm$", "cartridges 7.62 mm\n", False),
    ],
)
def test_single_and_batch_paths_search_alike(pattern: str, text: str, hit: bool) -> None:
    assert _both(pattern, text) == (hit, hit)
