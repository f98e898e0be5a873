"""Unmasking traveller data over the API (round-2 acceptance findings sec F8, an
A11): a person must sign in to unmask (an API key is refused, since the view must
name who looked), and the stated purpose needs visible text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from serving.auth import Role
from tests.serving.conftest import Api

API = "/api/v1"


def _store_record(api: Api, world: Path, record_id: str) -> None:
    row = pl.read_parquet(world / "validated" / "travellers.parquet").head(1).to_dicts()[0]
    record = {
        k: (v.isoformat() if isinstance(v, dt.date | dt.datetime) else v) for k, v in row.items()
    }
    record["traveller_record_id"] = record_id
    r = api.client.post(f"{API}/travellers", json=record, headers=api.headers(Role.analyst))
    assert r.status_code == 201, r.text


def test_an_api_key_cannot_unmask_and_a_purpose_needs_visible_text(
    world_api: Api, world: Path
) -> None:
    api = world_api
    _store_record(api, world, "UNMASK-1")
    admin = api.headers(Role.admin)
    key = api.client.post(
        f"{API}/users/api-keys", json={"name": "batch", "role": "analyst"}, headers=admin
    ).json()["key"]
    keyed = {"X-API-Key": key}
    masked = api.client.get(f"{API}/travellers/UNMASK-1", headers=keyed)
    assert masked.status_code == 200 and masked.json()["masked"] is True
    refused = api.client.get(
        f"{API}/travellers/UNMASK-1", params={"purpose": "batch job run"}, headers=keyed
    )
    assert refused.status_code == 403 and "person must sign in" in refused.json()["detail"]

    analyst = api.headers(Role.analyst)
    for blank in (" " * 5, "\u200b" * 5, "\u3000" * 5):
        r = api.client.get(f"{API}/travellers/UNMASK-1", params={"purpose": blank}, headers=analyst)
        assert r.status_code == 422, (repr(blank), r.text)
        assert r.json()["detail"][0]["loc"] == ["query", "purpose"]
    seen = api.client.get(
        f"{API}/travellers/UNMASK-1", params={"purpose": "case 2026/4 review"}, headers=analyst
    )
    assert seen.status_code == 200 and seen.json()["masked"] is False
    log = api.client.get(
        f"{API}/audit", params={"kind": "personal_data_view"}, headers=api.headers(Role.auditor)
    ).json()
    assert [(e["actor"], e["payload"]["purpose"]) for e in log] == [
        ("analyst1", "case 2026/4 review")
    ]
