"""Row-by-row paths for small frames (an online call holds one shipment) equal the
frame rules: party keys, the shipment family."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts.settings import DataLayout
from features import context, shipment
from features.context import PARTY_ROLES, Params, party_keys
from pipelines.features import load_history

ODD_IDS = [None, "", " ", "12 345.67/8-9", "\u00a0", "AB\u2003CD", "x\x1cy", "\u3000", "-./"]
ODD_IDS += ["ÄÖ 1", "\u2028"]
ODD_NAMES = [None, "", "ООО «Ромашка»", "Ivanov A.R.", "  ", "Абдуллаев Акмал Рустамович", "李小龍"]


def _both(frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    small = party_keys(frame)
    with monkeypatch.context() as m:
        m.setattr(context, "SMALL_KEYS", -1)
        whole = party_keys(frame)
    assert_frame_equal(small, whole)


def test_small_frames_get_the_frame_rule_keys(
    small_world: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    ships = load_history(small_world).shipments
    for seed in range(20):
        _both(ships.sample(1 + seed % 7, seed=seed), monkeypatch)
    n = len(ODD_IDS) * len(ODD_NAMES)
    odd = pl.DataFrame(
        {
            **{f"{role}_id": [ODD_IDS[i % len(ODD_IDS)] for i in range(n)] for role in PARTY_ROLES},
            **{
                f"{role}_name": [ODD_NAMES[(i + k) % len(ODD_NAMES)] for i in range(n)]
                for k, role in enumerate(PARTY_ROLES)
            },
        },
        schema={f"{r}_{c}": pl.String for r in PARTY_ROLES for c in ("id", "name")},
    )
    for chunk in odd.iter_slices(8):
        _both(chunk, monkeypatch)


def test_identifiers_lose_spaces_and_separators_names_fill_in() -> None:
    frame = pl.DataFrame(
        {
            **{f"{r}_id": ["12 345.67/8-9", "\u00a0-", None] for r in PARTY_ROLES},
            **{f"{r}_name": ["X", "Ivanov Petr", None] for r in PARTY_ROLES},
        }
    )
    got = party_keys(frame)["consignee_key"].to_list()
    assert got[0] == "id:123456789"
    assert got[1] is not None and got[1].startswith("name:") and "ivanov" in got[1]
    assert got[2] is None


def test_small_shipment_frames_get_the_frame_rule_values(
    small_world: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = load_history(small_world)
    params = Params()
    risky, usual = sorted(params.high_risk_countries), sorted(params.common_transit)
    odd = pl.DataFrame(
        {
            "shipment_id": ["a", "b", "c", "d", "e"],
            "invoice_amount": [10.0, None, 3.0, 5.0, 0.0],
            "invoice_currency": ["EUR", "USD", "XXX", None, "RUB"],
            "transit_countries": [[usual[0], risky[0], None], None, [], ["ZZ", "ZZ"], [None]],
            "origin_country": [risky[1], None, "CN", None, None],
            "dispatch_country": [None, risky[2], "CN", None, "CN"],
        },
        schema={
            "shipment_id": pl.String,
            "invoice_amount": pl.Float64,
            "invoice_currency": pl.String,
            "transit_countries": pl.List(pl.String),
            "origin_country": pl.String,
            "dispatch_country": pl.String,
        },
    )
    odd_items = pl.DataFrame({"shipment_id": ["a", "a", "c", "zz"]})
    samples = [(odd, odd_items)]
    for seed in range(15):
        ships = h.shipments.sample(1 + seed % 5, seed=seed)
        samples.append((ships, h.items.join(ships.select("shipment_id"), on="shipment_id")))
    for ships, items in samples:
        few = shipment.prepare(ships, items, params)
        with monkeypatch.context() as m:
            m.setattr(shipment, "SMALL", -1)
            assert_frame_equal(few, shipment.prepare(ships, items, params))
